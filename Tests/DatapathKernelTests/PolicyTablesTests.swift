@testable import Datapath
import Netlink
import Reconciler
import TestSupport
import XCTest

/// The policy's open-addressing tables without a kernel: every key placed at the limits, read
/// back as laid out, and a damaged slot left out of the read-back.
final class PolicyTablesTests: XCTestCase {
    func testFullTablesRoundTripAndDamageShows() throws {
        var random = SeededGenerator(seed: 17)
        var sources: [IPPrefix: UInt32] = [:]
        while sources.count < CompiledPolicy.maximumEntries {
            let address = IPv6Address(high: 0x2001_0db8_0000_0000 | UInt64.random(in: 0...0xffff, using: &random) << 16,
                                      low: UInt64.random(in: 1...UInt64.max, using: &random))
            sources[.host(.v6(address))] = UInt32.random(in: 0...300, using: &random)
        }
        var entries: [CompiledPolicy.Key: [CompiledPolicy.Item]] = [:]
        let lengths: [UInt8] = [128, 64, 48]
        while entries.count < CompiledPolicy.maximumEntries {
            let length = lengths.randomElement(using: &random)!
            let address = IPv6Address(high: 0x2001_0db8_0001_0000 | UInt64.random(in: 0...0xffff, using: &random),
                                      low: UInt64.random(in: 0...UInt64.max, using: &random))
            let destination = IPPrefix(address: .v6(address), length: length).canonical
            let count = Int.random(in: 1...4, using: &random)
            var items: [CompiledPolicy.Item] = []
            for i in 0..<count {
                let low = UInt16(i * 100)
                items.append(CompiledPolicy.Item(proto: 6, rule: UInt16(i), ports: PortRange(low, low + 50)))
            }
            entries[CompiledPolicy.Key(policyClass: UInt32.random(in: 0...300, using: &random), destination: destination)] = items
        }
        let policy = CompiledPolicy(clientToLAN: .deny, lanToClient: .replies, sources: sources, entries: entries, ruleCount: 4)
        let tables = try PolicyTables(policy)
        XCTAssertEqual(tables.lengths, lengths)

        var read = CompiledPolicy(clientToLAN: .deny, lanToClient: .replies, sources: [:], entries: [:], ruleCount: 4)
        tables.policy(into: &read)
        XCTAssertEqual(read, policy, "read back as laid out (seed \(tables.seed))")

        // The first used rule slot zeroed: that entry, and any placed after it in its run that
        // the programs can no longer reach, are missing from the read-back.
        var damaged = tables
        let slot = (0..<PolicyTables.ruleSlots).first { PolicyTables.u32(tables.rules, $0 * PolicyTables.ruleSize + 20) & PolicyTables.used != 0 }!
        damaged.rules.replaceSubrange((slot * PolicyTables.ruleSize)..<((slot + 1) * PolicyTables.ruleSize),
                                      with: [UInt8](repeating: 0, count: PolicyTables.ruleSize))
        var readDamaged = CompiledPolicy(clientToLAN: .deny, lanToClient: .replies, sources: [:], entries: [:], ruleCount: 4)
        damaged.policy(into: &readDamaged)
        XCTAssertLessThan(readDamaged.entries.count, policy.entries.count)
        XCTAssertNotEqual(readDamaged, policy)

        // A source whose class bitmap lost a length its class has entries at is left out.
        var bitmap = tables
        let source = (0..<PolicyTables.sourceSlots).first { s in
            let flags = PolicyTables.u32(tables.sources, s * PolicyTables.sourceSize + 20)
            return flags & PolicyTables.used != 0 && flags & ~PolicyTables.used != 0
        }!
        bitmap.sources.replaceSubrange((source * PolicyTables.sourceSize + 20)..<(source * PolicyTables.sourceSize + 24),
                                       with: PolicyTables.le32(PolicyTables.used))
        var readBitmap = CompiledPolicy(clientToLAN: .deny, lanToClient: .replies, sources: [:], entries: [:], ruleCount: 4)
        bitmap.policy(into: &readBitmap)
        XCTAssertEqual(readBitmap.sources.count, policy.sources.count - 1)
    }

    /// A copy of an entry (or a client) written in front of it in its probe run, with items of
    /// its own: the programs meet the copy first, so the read-back must not report the entry
    /// behind it as what they find (it did: the later slot overwrote the earlier one, and a
    /// tampered policy read back as the installed one was never repaired).
    func testADuplicateInFrontOfAnEntryIsInconsistent() throws {
        let client = IPPrefix.host(.v6(IPv6Address(high: 0x2001_0db8_0001_0000, low: 0xa)))
        let key = CompiledPolicy.Key(policyClass: 1, destination: .host(.v6(IPv6Address(high: 0x2001_0db8_0001_0000, low: 0x10))))
        let policy = CompiledPolicy(clientToLAN: .deny, lanToClient: .deny, sources: [client: 1],
                                    entries: [key: [CompiledPolicy.Item(proto: 6, rule: 0, ports: PortRange(22, 22))]], ruleCount: 1)
        let tables = try PolicyTables(policy)
        let mask = PolicyTables.ruleSlots - 1
        let home = Int(PolicyTables.home(seed: tables.seed, key)) & mask
        let size = PolicyTables.ruleSize
        XCTAssertNotEqual(PolicyTables.u32(tables.rules, home * size + 20) & PolicyTables.used, 0, "a lone entry sits at its home")
        var tampered = tables
        // The entry moved one slot on (still reachable: its home is used), and in its home a
        // copy whose one item, placed at the end of `items`, allows every protocol and port.
        let behind = (home + 1) & mask
        tampered.rules.replaceSubrange((behind * size)..<((behind + 1) * size), with: tables.rules[(home * size)..<((home + 1) * size)])
        let permissive = PolicyTables.itemBytes(CompiledPolicy.Item(proto: 0, rule: 0, ports: .all))
        let last = PolicyTables.itemSlots - 1
        tampered.items.replaceSubrange((last * PolicyTables.itemSize)..<((last + 1) * PolicyTables.itemSize), with: permissive)
        tampered.rules.replaceSubrange((home * size + 20)..<(home * size + 32),
                                       with: PolicyTables.le32(PolicyTables.used | UInt32(last) << PolicyTables.metaFirstShift | 1) + permissive)
        var read = CompiledPolicy(clientToLAN: .deny, lanToClient: .deny, sources: [:], entries: [:], ruleCount: 1)
        let consistent = tampered.policy(into: &read)
        XCTAssertFalse(consistent && read == policy, "the programs meet the permissive copy; the read-back must not say the policy is intact")

        // The same for a client: a copy in front of it with another class.
        let sourceMask = PolicyTables.sourceSlots - 1
        let sourceHome = Int(PolicyTables.home(seed: tables.seed, source: PolicyTables.words(client.address.bytes))) & sourceMask
        let sourceSize = PolicyTables.sourceSize
        var moved = tables
        let next = (sourceHome + 1) & sourceMask
        moved.sources.replaceSubrange((next * sourceSize)..<((next + 1) * sourceSize),
                                      with: tables.sources[(sourceHome * sourceSize)..<((sourceHome + 1) * sourceSize)])
        moved.sources.replaceSubrange((sourceHome * sourceSize + 16)..<(sourceHome * sourceSize + 20), with: PolicyTables.le32(0))
        var readMoved = CompiledPolicy(clientToLAN: .deny, lanToClient: .deny, sources: [:], entries: [:], ruleCount: 1)
        let movedConsistent = moved.policy(into: &readMoved)
        XCTAssertFalse(movedConsistent && readMoved == policy, "the programs meet the copy of class 0 first")
    }

    func testOverTheLimitsIsRefused() {
        let items = (0..<16).map { CompiledPolicy.Item(proto: 6, rule: 0, ports: PortRange(UInt16($0), UInt16($0))) }
        var entries: [CompiledPolicy.Key: [CompiledPolicy.Item]] = [:]
        for i in 0..<(CompiledPolicy.maximumItems / 16 + 1) {
            entries[CompiledPolicy.Key(policyClass: 0, destination: .host(.v6(IPv6Address(high: 0x2001_0db8_0001_0000, low: UInt64(i + 1)))))] = items
        }
        let policy = CompiledPolicy(clientToLAN: .deny, lanToClient: .deny, sources: [:], entries: entries, ruleCount: 1)
        XCTAssertThrowsError(try PolicyTables(policy)) { error in
            XCTAssertEqual(error as? PolicyTables.LayoutError, .tooManyItems((CompiledPolicy.maximumItems / 16 + 1) * 16))
        }
    }
}
