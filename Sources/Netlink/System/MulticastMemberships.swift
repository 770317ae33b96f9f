import CNetlink
import Glibc
import SystemPackage

/// One IPv6 multicast group on one interface.
public struct MulticastMembership: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var interfaceIndex: Int32
    public var group: IPv6Address

    public init(interfaceIndex: Int32, group: IPv6Address) {
        self.interfaceIndex = interfaceIndex
        self.group = group
    }

    public var description: String { "\(group) on interface \(interfaceIndex)" }
    public static func < (a: Self, b: Self) -> Bool { (a.interfaceIndex, a.group) < (b.interfaceIndex, b.group) }
}

extension IPv6Address {
    /// The solicited-node multicast group of this address, ff02::1:ffXX:XXXX with its low 24
    /// bits (RFC 4291 2.7.1): where address resolution sends its Neighbor Solicitations.
    public var solicitedNodeGroup: IPv6Address {
        IPv6Address(high: 0xff02_0000_0000_0000, low: 0x0000_0001_ff00_0000 | (low & 0xff_ffff))
    }
}

/// IPv6 multicast groups joined through sockets this process holds (`IPV6_JOIN_GROUP`, alias
/// `IPV6_ADD_MEMBERSHIP`), as the kernel joins a proxy entry's solicited-node group for itself.
/// The interface then takes the group's frames (its hardware filter) and reports the membership
/// by MLD, so switches that snoop MLD forward the group to it.
///
/// Each membership is charged to its socket's option memory: `ipv6_sock_mc_join` takes it with
/// `sock_kmalloc`, which fails once `net.core.optmem_max` would be exceeded. A socket therefore
/// takes groups until the kernel refuses one, and the next socket takes the rest: the limit is
/// whatever this kernel says, found by asking. Memberships end with their sockets, that is when
/// this process exits.
public final class MulticastMemberships {
    private struct Holder {
        var descriptor: FileDescriptor
        var count = 0
        /// The kernel refused a join on it; cleared by a leave.
        var full = false
    }

    private var holders: [Holder] = []
    private var joined: [MulticastMembership: Int] = [:]

    public init() {}

    deinit {
        for holder in holders { try? holder.descriptor.close() }
    }

    /// What is joined now.
    public var memberships: Set<MulticastMembership> { Set(joined.keys) }
    /// Sockets open, each holding up to its share of the memberships.
    public var socketCount: Int { holders.count }

    /// Makes the joined set equal `wanted`: leaves first (which frees room), then joins. Returns
    /// the memberships that could not be joined or left, with the kernel's error; each is
    /// tried again at the next call.
    public func synchronize(_ wanted: Set<MulticastMembership>) -> [MulticastMembership: Errno] {
        var failures: [MulticastMembership: Errno] = [:]
        for membership in joined.keys.sorted() where !wanted.contains(membership) {
            let index = joined[membership]!
            do {
                try set(IPV6_LEAVE_GROUP, membership, on: holders[index].descriptor)
            } catch let error as Errno where error != .addressNotAvailable {
                failures[membership] = error
                continue
            } catch {
                // EADDRNOTAVAIL: the socket does not hold it; nothing to leave.
            }
            joined[membership] = nil
            holders[index].count -= 1
            holders[index].full = false
        }
        for membership in wanted.sorted() where joined[membership] == nil {
            do {
                joined[membership] = try join(membership)
            } catch let error as Errno {
                failures[membership] = error
            } catch {}
        }
        closeEmptySockets()
        return failures
    }

    /// Leaves everything (the sockets close).
    public func leaveAll() {
        for holder in holders { try? holder.descriptor.close() }
        holders = []
        joined = [:]
    }

    /// Joins on the first socket with room, opening a new one when every socket is full.
    private func join(_ membership: MulticastMembership) throws -> Int {
        for index in holders.indices where !holders[index].full {
            do {
                try set(IPV6_JOIN_GROUP, membership, on: holders[index].descriptor)
                holders[index].count += 1
                return index
            } catch let error as Errno where error == .noMemory || error == .noBufferSpace {
                holders[index].full = true
            }
        }
        let descriptor = try Self.openSocket()
        do {
            try set(IPV6_JOIN_GROUP, membership, on: descriptor)
        } catch {
            try? descriptor.close()
            throw error
        }
        holders.append(Holder(descriptor: descriptor, count: 1))
        return holders.count - 1
    }

    /// Sockets left without a membership are closed, the indexes of the others kept in step.
    private func closeEmptySockets() {
        guard holders.contains(where: { $0.count == 0 }) else { return }
        var renumbered: [Int: Int] = [:]
        var kept: [Holder] = []
        for (index, holder) in holders.enumerated() {
            if holder.count == 0 {
                try? holder.descriptor.close()
            } else {
                renumbered[index] = kept.count
                kept.append(holder)
            }
        }
        holders = kept
        joined = joined.mapValues { renumbered[$0]! }
    }

    /// An unbound UDP socket: it receives nothing, it only holds memberships.
    private static func openSocket() throws -> FileDescriptor {
        let fd = socket(AF_INET6, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Errno(rawValue: errno) }
        return FileDescriptor(rawValue: fd)
    }

    private func set(_ option: Int32, _ membership: MulticastMembership, on descriptor: FileDescriptor) throws {
        var request = ipv6_mreq()
        withUnsafeMutableBytes(of: &request.ipv6mr_multiaddr) { $0.copyBytes(from: membership.group.bytes) }
        request.ipv6mr_interface = UInt32(bitPattern: membership.interfaceIndex)
        let result = setsockopt(descriptor.rawValue, Int32(IPPROTO_IPV6), option, &request,
                                socklen_t(MemoryLayout<ipv6_mreq>.size))
        if result != 0 { throw Errno(rawValue: errno) }
    }
}
