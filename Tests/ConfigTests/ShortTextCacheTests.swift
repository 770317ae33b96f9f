@testable import Config
import Foundation
import XCTest

/// `TreeBuilder`'s cache of recent short texts: a scalar found there shares the text of an
/// earlier equal one; one that is not equal byte for byte (another length, another word, a
/// slot taken by another text meanwhile) never does.
final class ShortTextCacheTests: XCTestCase {
    func testEveryScalarReadsBackItsOwnTextWhateverItsSlot() {
        var g = SystemRandomNumberGenerator()
        let alphabet = Array("ab c")
        for round in 0..<20 {
            // Short texts that differ in one byte, in their length alone (a trailing space in
            // quotes), in their second word (bytes 9 to 16), repeated near and far apart.
            var texts: [String] = []
            for _ in 0..<3000 {
                if !texts.isEmpty, Int.random(in: 0..<3, using: &g) == 0 {
                    texts.append(texts[Int.random(in: max(0, texts.count - 300)..<texts.count, using: &g)])
                    continue
                }
                let length = Int.random(in: 0...17, using: &g)
                texts.append(String((0..<length).map { _ in alphabet.randomElement(using: &g)! }))
            }
            let yaml = "items:\n" + texts.map { "  - \"\($0)\"\n" }.joined()
            var budget = Tree.Budget(.standard)
            var errors = ConfigErrorList(limit: 10)
            guard let items = Tree.parse(yaml, file: "f.yaml", budget: &budget, errors: &errors)?.lookup("items")?.items else {
                return XCTFail("round \(round): no items: \(errors)")
            }
            XCTAssertEqual(items.map { $0.text ?? "<none>" }, texts, "round \(round)")
        }
    }
}
