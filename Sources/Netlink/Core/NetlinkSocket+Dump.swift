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
                return interrupted ? .interrupted : .done(items)
            }
            if !interrupted, let item = try decode(message) { items.append(item) }
        }
        return .more
    }
}

extension NetlinkSocket {
    /// Runs a dump (or a get) and decodes each reply as it arrives. A dump the kernel marks
    /// inconsistent is read to its end, thrown away and redone, up to `attempts` times.
    public func dump<T>(
        _ request: Request, attempts: Int = 8, timeout: Duration = .seconds(30),
        decode: (Message) throws -> T?
    ) throws -> [T] {
        for _ in 0..<attempts {
            let buffer = MessageBuffer(capacity: 4096)
            let sequence = allocateSequence()
            guard buffer.append(type: request.type, flags: request.flags, sequence: sequence, request.body) else {
                throw NetlinkError(.malformed("dump request does not fit"), context: request.summary)
            }
            try send(buffer)
            let deadline = ContinuousClock.now + timeout
            var collector = DumpCollector<T>(sequence: sequence, context: request.summary)
            while true {
                let messages: [Message]
                do {
                    messages = try receive(deadline: deadline)
                } catch let error as NetlinkError {
                    throw NetlinkError(error.reason, context: request.summary)
                }
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
