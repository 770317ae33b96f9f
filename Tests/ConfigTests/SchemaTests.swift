import Config
import Foundation
import XCTest

/// Keeps deploy/wgkeeper.schema.json, deploy/wgkeeper.yaml and the validator in step.
final class SchemaTests: XCTestCase {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let deploy = repository.appendingPathComponent("deploy")
    static let schemaPath = deploy.appendingPathComponent("wgkeeper.schema.json").path
    static let examplePath = deploy.appendingPathComponent("wgkeeper.yaml").path
    static var exampleIncludes: [String] {
        let dir = deploy.appendingPathComponent("examples/conf.d").path
        return ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".yaml") }.sorted()
            .map { (dir as NSString).appendingPathComponent($0) }
    }

    private func schema() throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.schemaPath))
        return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    func testSchemaNamesEveryKeyTheValidatorKnowsAndNoOther() throws {
        let root = try schema()
        func object(_ node: Any?, _ path: String) throws -> [String: Any] {
            try XCTUnwrap(node as? [String: Any], "schema has no object at \(path)")
        }
        func keys(_ node: [String: Any], _ path: String) throws -> [String] {
            XCTAssertEqual(node["additionalProperties"] as? Bool, false, "\(path) must refuse unknown keys, as the validator does")
            return try object(node["properties"], path).keys.sorted()
        }
        let properties = try object(root["properties"], "")
        let device = try object(object(properties["wireguard"], "wireguard")["additionalProperties"], "wireguard.*")
        let peer = try object(object(object(device["properties"], "wireguard.*")["peers"], "peers")["items"], "peers[]")
        let found: [String: [String]] = [
            "": try keys(root, "the top level"),
            "runtime": try keys(object(properties["runtime"], "runtime"), "runtime"),
            "wireguard.*": try keys(device, "wireguard.*"),
            "wireguard.*.peers[]": try keys(peer, "wireguard.*.peers[]"),
            "gateway": try keys(object(properties["gateway"], "gateway"), "gateway"),
            "routes[]": try keys(object(object(properties["routes"], "routes")["items"], "routes[]"), "routes[]"),
            "proxies[]": try keys(object(object(properties["proxies"], "proxies")["items"], "proxies[]"), "proxies[]"),
            "policy": try keys(object(properties["policy"], "policy"), "policy"),
            "policy.rules[]": try keys(object(object(object(object(properties["policy"], "policy")["properties"], "policy")["rules"], "rules")["items"], "rules[]"), "policy.rules[]"),
        ]
        XCTAssertEqual(Set(found.keys), Set(ConfigKeys.byPath.keys))
        for (path, names) in ConfigKeys.byPath {
            XCTAssertEqual(found[path], names.sorted(), "keys at \(path.isEmpty ? "the top level" : path)")
        }
    }

    func testSchemaReservesTheSameRouteProtocols() throws {
        let runtime = try XCTUnwrap(((try schema()["properties"] as? [String: Any])?["runtime"] as? [String: Any])?["properties"] as? [String: Any])
        let reserved = try XCTUnwrap(((runtime["route_protocol"] as? [String: Any])?["not"] as? [String: Any])?["enum"] as? [Int])
        XCTAssertEqual(Set(reserved), Set(ConfigKeys.reservedRouteProtocols.keys.filter { $0 != 0 }.map(Int.init)))
    }

    /// Builds a root directory holding what the example names under /etc/wgkeeper.
    static func exampleRoot(for test: XCTestCase) throws -> String {
        let fixture = try ConfigFixture(for: test)
        try fixture.writeKey("etc/wgkeeper/wg0.key")
        try fixture.writeKey("etc/wgkeeper/alice.psk")
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: fixture.path("etc/wgkeeper/wg0.key"))
        try FileManager.default.createDirectory(atPath: fixture.path("etc/wgkeeper/conf.d"), withIntermediateDirectories: true)
        for file in exampleIncludes {
            try FileManager.default.copyItem(atPath: file, toPath: fixture.path("etc/wgkeeper/conf.d/" + (file as NSString).lastPathComponent))
        }
        return fixture.directory
    }

    func testExampleConfigurationPassesCheck() throws {
        let root = try Self.exampleRoot(for: self)
        switch ConfigLoader(root: root).load(path: Self.examplePath) {
        case .success(let loaded):
            XCTAssertEqual(loaded.summary, "1 device, 3 peers, 6 routes, 5 proxies")
        case .failure(let errors):
            XCTFail("deploy/wgkeeper.yaml must pass check:\n\(errors)")
        }
    }

    /// Every configuration the tests expect `check` to accept also validates against the schema
    /// (python3 with PyYAML and jsonschema: the validator editors use). Fails loudly without them.
    func testAcceptedConfigurationsValidateAgainstTheSchema() throws {
        let fixture = try ConfigFixture(for: self)
        var files = [Self.examplePath] + Self.exampleIncludes
        for (i, text) in (AcceptedConfigs.all + [AcceptedConfigs.includeFragment]).enumerated() {
            try fixture.write("accepted\(i).yaml", text)
            files.append(fixture.path("accepted\(i).yaml"))
            if i < AcceptedConfigs.all.count, case .failure(let errors) = ConfigLoader().load(path: fixture.path("accepted\(i).yaml")) {
                XCTFail("accepted configuration \(i) fails check:\n\(errors)")
            }
        }
        try fixture.write("rejected.yaml", AcceptedConfigs.minimal + "gateway:\n  tunnel: wg0\n  lan: private0\n  lan_prefix: 2001:db8::/64\n  bogus: 1\n")
        let script = """
            import json, sys
            try:
                import jsonschema, yaml
            except ImportError as error:
                sys.exit(f"python3 needs jsonschema and PyYAML for this test: {error}")
            schema = json.load(open(sys.argv[1]))
            validator = jsonschema.Draft202012Validator(schema)
            jsonschema.Draft202012Validator.check_schema(schema)
            failed = False
            for path in sys.argv[2:]:
                errors = list(validator.iter_errors(yaml.safe_load(open(path))))
                expect_failure = path.endswith("rejected.yaml")
                if bool(errors) != expect_failure:
                    failed = True
                    print(f"{path}: " + ("; ".join(e.message for e in errors) or "accepted, expected a failure"))
            sys.exit(1 if failed else 0)
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, Self.schemaPath] + files + [fixture.path("rejected.yaml")]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, text)
    }
}
