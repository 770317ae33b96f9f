import CNetlink
import SystemPackage

/// Collects one dump's replies. Pure: fed messages, it says when the dump is over and whether
/// it must be redone, so the retry logic is tested without a kernel that misbehaves on cue.
struct DumpCollector<T> {
    enum Outcome {
        case more
        case done([T])
        /// The kernel marked a reply `NLM_F_DUMP_INTR`: the table changed mid-walk; redo it.
        case interrupted
    }

    let sequence: UInt32
    let context: String
    private var items: [T] = []
    private var interrupted = false
    /// The first reply that did not decode: thrown once the dump is over, not halfway (the
    /// kernel runs one dump per socket at a time: a dump left unread makes the socket's next
    /// one fail with `EBUSY`).
    private var failure: (any Error)?

    init(sequence: UInt32, context: String) {
        self.sequence = sequence
        self.context = context
    }

    mutating func feed(_ messages: [Message], decode: (Message) throws -> T?) throws -> Outcome {
        for message in messages where message.sequence == sequence {
            if message.isInterrupted { interrupted = true }
            if message.isDone || message.isError {
                let (code, text) = try message.status()
                if code != 0 {
                    throw NetlinkError(.kernel(Errno(rawValue: code)), context: context, kernelMessage: text)
                }
                if interrupted { return .interrupted }
                if let failure { throw failure }
                return .done(items)
            }
            if !interrupted, failure == nil {
                do {
                    if let item = try decode(message) { items.append(item) }
                } catch {
                    failure = error
                }
            }
        }
        return .more
    }
}

extension NetlinkSocket {
    /// The next replies, a failure to read them said in `request`'s terms.
    func receive(deadline: ContinuousClock.Instant, for request: Request) throws -> [Message] {
        do {
            return try receive(deadline: deadline)
        } catch let error as NetlinkError {
            throw NetlinkError(error.reason, context: request.summary)
        }
    }

    /// Sends `request` alone under a new sequence number, which its replies carry.
    func sendRequest(_ request: Request) throws -> UInt32 {
        let buffer = MessageBuffer(capacity: 4096)
        let sequence = allocateSequence()
        guard buffer.append(type: request.type, flags: request.flags, sequence: sequence, request.body) else {
            throw NetlinkError(.malformed("dump request does not fit"), context: request.summary)
        }
        try send(buffer)
        return sequence
    }

    /// Runs a dump (or a get) and decodes each reply as it arrives. A dump the kernel marks
    /// inconsistent is read to its end, thrown away and redone, up to `attempts` times.
    public func dump<T>(
        _ request: Request, attempts: Int = 8, timeout: Duration = .seconds(30),
        decode: (Message) throws -> T?
    ) throws -> [T] {
        for _ in 0..<attempts {
            let sequence = try sendRequest(request)
            let deadline = ContinuousClock.now + timeout
            var collector = DumpCollector<T>(sequence: sequence, context: request.summary)
            while true {
                let messages = try receive(deadline: deadline, for: request)
                switch try collector.feed(messages, decode: decode) {
                case .more: continue
                case .done(let items): return items
                case .interrupted: break
                }
                break
            }
        }
        throw NetlinkError(.dumpInterrupted, context: request.summary)
    }
}

extension NetlinkSocket {
    /// A dump's first reply that decodes, or nil when the dump ends with none. The kernel keeps
    /// the rest of the dump for this socket's next reads: close it after, do not reuse it.
    public func firstReply<T>(_ request: Request, timeout: Duration = .seconds(30), decode: (Message) throws -> T?) throws -> T? {
        let sequence = try sendRequest(request)
        let deadline = ContinuousClock.now + timeout
        while true {
            let messages = try receive(deadline: deadline, for: request)
            for message in messages where message.sequence == sequence {
                if message.isDone || message.isError {
                    let (code, text) = try message.status()
                    if code != 0 { throw NetlinkError(.kernel(Errno(rawValue: code)), context: request.summary, kernelMessage: text) }
                    return nil
                }
                if let item = try decode(message) { return item }
            }
        }
    }
}

/// A dump that may skip decoding: its replies, or the news that they are the bytes seen before.
public enum DumpOutcome<T> {
    /// The replies are, byte for byte, the ones this digest was made of: nothing was decoded.
    case unchanged(ReadDigest)
    /// The replies decoded, and their digest (for the next poll to compare with).
    case read([T], ReadDigest)
}

/// What a poll's dump is compared by: fed each reply of the dump as it arrives (type, flags
/// without `NLM_F_DUMP_INTR`, payload; never the sequence number or port id, which differ from
/// dump to dump), it gives the digest. Two dumps with the same digest must decode the same,
/// except in what the fingerprint says it leaves out (and then keeps, as `WireGuardFingerprint`
/// keeps the traffic figures); a fingerprint that cannot vouch for the bytes (it could not walk
/// them) gives nil, and the dump is decoded.
public protocol DumpFingerprint {
    init()
    mutating func feed(type: UInt16, flags: UInt16, payload: UnsafeRawBufferPointer)
    func finalize() -> ReadDigest?
}

/// Every byte of every reply.
public struct WholeDumpFingerprint: DumpFingerprint {
    private var digest = ReadDigest.Builder()

    public init() {}

    public mutating func feed(type: UInt16, flags: UInt16, payload: UnsafeRawBufferPointer) {
        digest.combine(UInt64(type) << 16 | UInt64(flags))
        digest.combine(piece: payload)
    }

    public func finalize() -> ReadDigest? { digest.finalize() }
}

extension NetlinkSocket {
    /// A dump for a poll, decoded only when its replies' fingerprint (every byte: see
    /// `DumpFingerprint`) differs from `previous`. The kernel orders a dump by its own tables,
    /// so the same table gives the same bytes; anything else is decoded.
    public func dump<T>(
        _ request: Request, unless previous: ReadDigest?, attempts: Int = 8, timeout: Duration = .seconds(30),
        decode: (Message) throws -> T?
    ) throws -> DumpOutcome<T> {
        try dump(request, unless: previous, fingerprint: WholeDumpFingerprint.self, attempts: attempts, timeout: timeout, decode: decode).0
    }

    /// A dump for a poll, compared by `fingerprint`. With a `previous` digest the dump is first
    /// walked without keeping anything (an unchanged poll copies and decodes nothing); when its
    /// digest differs, the dump is run again and decoded, and the digest returned is that of
    /// the run decoded. `expectingChange` (a source whose last poll found a change, as a busy
    /// gateway's WireGuard device with roaming clients): one run, the replies copied as they are
    /// walked and decoded from the copies when they differ. Also returns the fingerprint of the
    /// run that decided (for what it kept).
    public func dump<T, F: DumpFingerprint>(
        _ request: Request, unless previous: ReadDigest?, fingerprint: F.Type, expectingChange: Bool = false,
        attempts: Int = 8, timeout: Duration = .seconds(30), decode: (Message) throws -> T?
    ) throws -> (DumpOutcome<T>, F) {
        if let previous {
            let (fingerprint, _, kept): (F, [T], [Message]) = try fingerprintedDump(
                request, attempts: attempts, timeout: timeout, fingerprint: F.self, mode: expectingChange ? .keep : .walk, decode: decode)
            let digest = fingerprint.finalize()
            if let digest, digest == previous { return (.unchanged(digest), fingerprint) }
            if expectingChange {
                // The run is over: a reply that does not decode can be thrown at once.
                return (.read(try kept.compactMap(decode), digest ?? ReadDigest.unmatched()), fingerprint)
            }
        }
        let (fingerprint, items, _): (F, [T], [Message]) = try fingerprintedDump(
            request, attempts: attempts, timeout: timeout, fingerprint: F.self, mode: .decode, decode: decode)
        // A fingerprint that cannot vouch for these bytes gets a digest nothing equals: the
        // next poll decodes again.
        let digest = fingerprint.finalize() ?? ReadDigest.unmatched()
        return (.read(items, digest), fingerprint)
    }

    /// What a run does with the replies besides fingerprinting them: nothing, decode them as
    /// they arrive, or keep copies of them to decode after.
    private enum RunMode { case walk, decode, keep }

    /// One run of a dump, fingerprinted, and decoded (by a `DumpCollector`: a reply that does
    /// not decode is thrown once the run is read to its end) or kept as `mode` says. A run the
    /// kernel marks interrupted (`NLM_F_DUMP_INTR`) is read to its end and done again.
    private func fingerprintedDump<T, F: DumpFingerprint>(
        _ request: Request, attempts: Int, timeout: Duration, fingerprint _: F.Type, mode: RunMode, decode: (Message) throws -> T?
    ) throws -> (F, [T], [Message]) {
        for _ in 0..<attempts {
            let sequence = try sendRequest(request)
            let deadline = ContinuousClock.now + timeout
            var fingerprint = F()
            var collector = DumpCollector<T>(sequence: sequence, context: request.summary)
            var kept: [Message] = []
            var last: Message?
            var interrupted = false
            while last == nil {
                let datagram: UnsafeRawBufferPointer
                do {
                    datagram = try receiveDatagram(deadline: deadline)
                } catch let error as NetlinkError {
                    throw NetlinkError(error.reason, context: request.summary)
                }
                try Message.forEach(in: datagram) { header, payload in
                    guard header.nlmsg_seq == sequence else { return true }
                    if header.nlmsg_flags & UInt16(NLM_F_DUMP_INTR) != 0 { interrupted = true }
                    if header.nlmsg_type == UInt16(NLMSG_DONE) || header.nlmsg_type == UInt16(NLMSG_ERROR) {
                        last = Message(type: header.nlmsg_type, flags: header.nlmsg_flags, sequence: sequence,
                                       portID: header.nlmsg_pid, payload: Array(payload))
                        return false
                    }
                    fingerprint.feed(type: header.nlmsg_type, flags: header.nlmsg_flags & ~UInt16(NLM_F_DUMP_INTR), payload: payload)
                    if mode != .walk, !interrupted {
                        let message = Message(type: header.nlmsg_type, flags: header.nlmsg_flags, sequence: sequence,
                                              portID: header.nlmsg_pid, payload: Array(payload))
                        // A reply before the last: the collector keeps a decoding error for the end.
                        if mode == .keep { kept.append(message) } else { _ = try collector.feed([message], decode: decode) }
                    }
                    return true
                }
            }
            let (code, text) = try last!.status()
            if code != 0 {
                throw NetlinkError(.kernel(Errno(rawValue: code)), context: request.summary, kernelMessage: text)
            }
            if interrupted { continue }
            guard mode == .decode else { return (fingerprint, [], kept) }
            // The last reply: the collector's items, or the first reply that did not decode.
            guard case .done(let items) = try collector.feed([last!], decode: decode) else { continue }
            return (fingerprint, items, kept)
        }
        throw NetlinkError(.dumpInterrupted, context: request.summary)
    }
}

extension DumpOutcome: Sendable where T: Sendable {}
