@testable import Daemon
import Dispatch
import Glibc
import Netlink
import Reconciler
import XCTest

/// Name resolution never runs on the caller's thread, and a peer waits for its name.
final class EndpointResolutionTests: XCTestCase {
    private let host = HostEndpoint(host: "vpn.example.org", port: 51820)

    func testHoldReasons() {
        XCTAssertEqual(HostResolution().holdReason(host), "endpoint vpn.example.org: resolving")
        XCTAssertEqual(HostResolution(error: "Name or service not known").holdReason(host),
                       "endpoint vpn.example.org does not resolve: Name or service not known")
        let address = Endpoint(address: .v6(IPv6Address("2001:db8::1")!), port: 51820)
        XCTAssertNil(HostResolution(endpoint: address).holdReason(host))
        XCTAssertNil(HostResolution(endpoint: address, error: "timed out").holdReason(host), "a name that resolved once keeps its address")
    }

    func testLookupsRunOffTheCallerBoundedAndAnswerThroughThePipe() throws {
        let release = DispatchSemaphore(value: 0)
        let resolver = try EndpointResolver { host in
            release.wait()  // a DNS server that does not answer until the test says so
            return .failure(EndpointLookupError(description: "no answer for \(host.host)"))
        }
        let start = ContinuousClock.now
        XCTAssertTrue(resolver.resolve(host))
        XCTAssertFalse(resolver.resolve(host), "one lookup per name at a time")
        for i in 1..<EndpointResolver.maxInFlight { XCTAssertTrue(resolver.resolve(HostEndpoint(host: "h\(i).example.org", port: 1))) }
        XCTAssertFalse(resolver.resolve(HostEndpoint(host: "one-too-many.example.org", port: 1)), "lookups in flight are bounded")
        XCTAssertLessThan(ContinuousClock.now - start, .milliseconds(100), "resolve() never waits for the lookup")
        XCTAssertTrue(resolver.take().isEmpty)

        for _ in 0..<EndpointResolver.maxInFlight { release.signal() }
        var pfd = pollfd(fd: resolver.wakeFD, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&pfd, 1, 2000), 1, "the loop is woken")
        var answers: [EndpointResolver.Answer] = []
        let deadline = ContinuousClock.now + .seconds(2)
        while answers.count < EndpointResolver.maxInFlight, ContinuousClock.now < deadline {
            answers += resolver.take()
            usleep(1000)
        }
        XCTAssertEqual(answers.count, EndpointResolver.maxInFlight)
        XCTAssertTrue(resolver.resolve(host), "a name can be looked up again once its lookup answered")
        release.signal()
    }
}
