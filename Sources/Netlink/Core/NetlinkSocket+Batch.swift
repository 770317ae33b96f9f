import CNetlink
import SystemPackage

extension NetlinkSocket {
    /// Sends every request, many per `sendmsg`, then collects the acks and matches them by
    /// sequence number. One result per request, in order: one failure hides nothing else.
    ///
    /// Throws only when the socket itself fails; a request the kernel refused is a `.failure`.
    public func perform(_ requests: [Request], timeout: Duration = .seconds(10)) throws -> [Result<Void, NetlinkError>] {
        var results = [Result<Void, NetlinkError>?](repeating: nil, count: requests.count)
        let buffer = MessageBuffer(capacity: 128 * 1024)
        var pending: [UInt32: Int] = [:]
        var next = 0
        while next < requests.count {
            buffer.reset()
            pending.removeAll(keepingCapacity: true)
            // Fill one buffer; a request that fits no empty buffer fails alone.
            while next < requests.count {
                let request = requests[next]
                let sequence = allocateSequence()
                if buffer.append(type: request.type, flags: request.flags, sequence: sequence, portID: 0, request.body) {
                    pending[sequence] = next
                    next += 1
                } else if buffer.isEmpty {
                    results[next] = .failure(NetlinkError(.malformed("request larger than \(buffer.capacity) bytes"), context: request.summary))
                    next += 1
                } else {
                    break
                }
            }
            if buffer.isEmpty { continue }
            try send(buffer)
            writeCount += buffer.messageCount
            try collectAcks(&pending, requests: requests, results: &results, deadline: .now + timeout)
        }
        return results.map { $0! }
    }

    /// Sends one request and waits for its ack.
    public func perform(_ request: Request, timeout: Duration = .seconds(10)) throws {
        try perform([request], timeout: timeout)[0].get()
    }

    private func collectAcks(
        _ pending: inout [UInt32: Int], requests: [Request],
        results: inout [Result<Void, NetlinkError>?], deadline: ContinuousClock.Instant
    ) throws {
        while !pending.isEmpty {
            let messages: [Message]
            do {
                messages = try receive(deadline: deadline)
            } catch let error as NetlinkError where error.reason == .overflow || error.reason == .timeout {
                // Acks were lost or never came: those requests' outcome is unknown, say so for each.
                for (_, index) in pending { results[index] = .failure(NetlinkError(error.reason, context: requests[index].summary)) }
                pending.removeAll()
                return
            }
            for message in messages where message.isError {
                guard let index = pending.removeValue(forKey: message.sequence) else { continue }
                let (code, text) = try message.status()
                results[index] = code == 0
                    ? .success(())
                    : .failure(NetlinkError(.kernel(Errno(rawValue: code)), context: requests[index].summary, kernelMessage: text))
            }
        }
    }
}
