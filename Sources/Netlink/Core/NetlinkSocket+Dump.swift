import CNetlink
import SystemPackage

extension NetlinkSocket {
    /// Runs a dump and decodes each reply as it arrives. A dump the kernel marks inconsistent
    /// (`NLM_F_DUMP_INTR`: the table changed while it was walked) is thrown away and redone.
    public func dump<T>(
        _ request: Request, attempts: Int = 8, timeout: Duration = .seconds(30),
        decode: (Message) throws -> T?
    ) throws -> [T] {
        for _ in 0..<attempts {
            if let items = try dumpOnce(request, timeout: timeout, decode: decode) { return items }
        }
        throw NetlinkError(.dumpInterrupted, context: request.summary)
    }

    /// Returns nil when the dump was interrupted.
    private func dumpOnce<T>(_ request: Request, timeout: Duration, decode: (Message) throws -> T?) throws -> [T]? {
        let buffer = MessageBuffer(capacity: 4096)
        let sequence = allocateSequence()
        guard buffer.append(type: request.type, flags: request.flags, sequence: sequence, request.body) else {
            throw NetlinkError(.malformed("dump request does not fit"), context: request.summary)
        }
        try send(buffer)
        let deadline = ContinuousClock.now + timeout
        var items: [T] = []
        var interrupted = false
        while true {
            let messages: [Message]
            do {
                messages = try receive(deadline: deadline)
            } catch let error as NetlinkError {
                throw NetlinkError(error.reason, context: request.summary)
            }
            for message in messages where message.sequence == sequence {
                if message.isInterrupted { interrupted = true }
                if message.isDone || message.isError {
                    let (code, text) = try message.status()
                    if code != 0 {
                        throw NetlinkError(.kernel(Errno(rawValue: code)), context: request.summary, kernelMessage: text)
                    }
                    return interrupted ? nil : items
                }
                if !interrupted, let item = try decode(message) { items.append(item) }
            }
        }
    }
}
