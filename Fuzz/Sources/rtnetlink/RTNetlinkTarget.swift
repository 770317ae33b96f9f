@testable import Netlink

/// One datagram as an rtnetlink socket delivers it (a dump reply, an event, an ack). Every
/// message goes through every decoder, whatever its type: the decoders must refuse what is not
/// theirs, never crash on it. What decodes must encode back to itself.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRTNetlink(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let messages = try? Message.parse(UnsafeRawBufferPointer(start: data, count: size)) else { return 0 }
    for message in messages {
        _ = try? RouteEvent.decode(message)
        _ = try? Link.decode(message)
        _ = try? Address.decode(message)
        _ = try? Netconf.decode(message)
        _ = try? message.status()
        // What wgkeeper never writes (a route's `extras`, a proxy entry's router flag) is read,
        // so that a replace takes it away: the round trip holds without it.
        if var route = try? Route.decode(message) {
            route.extras = []
            check(route, Route.decode, route.addRequest())
        }
        if var entry = try? ProxyEntry.decode(message) {
            entry.router = false
            check(entry, ProxyEntry.decode, entry.addRequest())
        }
    }
    // The dump state machine over the same replies, as the socket feeds it.
    var collector = DumpCollector<Route>(sequence: messages.first?.sequence ?? 0, context: "fuzz")
    _ = try? collector.feed(messages) { try Route.decode($0) }
    return 0
}

/// decode(encode(x)) == x: what wgkeeper read is what it would write.
private func check<T: Equatable>(_ value: T, _ decode: (Message) throws -> T?, _ request: Request) {
    guard let bytes = request.encoded(sequence: 1) else { fatalError("cannot encode \(value)") }
    let again = try? Message.parse(bytes).first.flatMap(decode)
    if again != value { fatalError("round trip: \(value) came back as \(again.map { "\($0)" } ?? "nothing")") }
}
