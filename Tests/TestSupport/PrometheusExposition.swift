/// A strict reader of Prometheus's text exposition format (0.0.4), standing in for
/// `promtool check metrics`: metric and label names by the format's grammar, label values with
/// only the three escapes, one HELP and one TYPE per family before its samples, each family's
/// samples together, values that parse as floats, no series twice, histograms whose buckets
/// grow and end at `+Inf` equal to `_count`.
public struct PrometheusExposition {
    public struct Sample: Equatable {
        public var name: String
        public var labels: [String: String]
        public var value: Double
    }

    public private(set) var samples: [Sample] = []
    /// Family name → TYPE.
    public private(set) var types: [String: String] = [:]
    public private(set) var help: [String: String] = [:]

    public init(_ text: String) throws {
        guard text.isEmpty || text.hasSuffix("\n") else { throw TestFailure("the exposition does not end with a line feed") }
        var finished: Set<String> = []
        var current: String?
        var series: Set<String> = []
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().enumerated() {
            func fail(_ why: String) -> TestFailure { TestFailure("line \(number + 1): \(why): \(line)") }
            if line.isEmpty { continue }
            if line.hasPrefix("#") {
                let words = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false)
                guard words.count >= 3, words[0] == "#", words[1] == "HELP" || words[1] == "TYPE" else { continue }
                let name = String(words[2]), rest = words.count > 3 ? String(words[3]) : ""
                guard Self.isMetricName(name) else { throw fail("bad metric name") }
                if finished.contains(name) { throw fail("\(name) appears again after other families") }
                if current != name, let current { finished.insert(current) }
                current = name
                if words[1] == "HELP" {
                    guard help[name] == nil else { throw fail("a second HELP") }
                    guard Self.isValidHelp(rest) else { throw fail("bad escape in HELP") }
                    help[name] = rest
                } else {
                    guard types[name] == nil else { throw fail("a second TYPE") }
                    guard samples.allSatisfy({ Self.family(of: $0.name, types: [:]) != name }) else { throw fail("TYPE after samples") }
                    guard ["counter", "gauge", "histogram", "summary", "untyped"].contains(rest) else { throw fail("unknown type") }
                    types[name] = rest
                }
                continue
            }
            let sample: Sample
            do { sample = try Self.parseSample(line) } catch { throw fail("\(error)") }
            let family = Self.family(of: sample.name, types: types)
            if finished.contains(family) { throw fail("\(family)'s samples are not together") }
            if current != family, let current { finished.insert(current) }
            current = family
            let key = sample.name + "{" + sample.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",") + "}"
            guard series.insert(key).inserted else { throw fail("the same series twice") }
            if types[family] == "counter", !(sample.value >= 0) { throw fail("a negative counter") }
            samples.append(sample)
        }
        try checkHistograms()
    }

    /// The samples of one metric (a histogram's `_bucket`, `_sum`, `_count` by their own names).
    public func values(_ name: String, _ labels: [String: String] = [:]) -> [Double] {
        samples.filter { sample in sample.name == name && labels.allSatisfy { sample.labels[$0.key] == $0.value } }.map(\.value)
    }

    /// The one sample of `name` with exactly these labels.
    public func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }

    private func checkHistograms() throws {
        for (family, type) in types where type == "histogram" {
            var groups: [[String: String]: [(le: Double, count: Double)]] = [:]
            for sample in samples where sample.name == family + "_bucket" {
                guard let le = sample.labels["le"], let bound = Self.float(le) else { throw TestFailure("\(family): a bucket without a float le") }
                groups[sample.labels.filter { $0.key != "le" }, default: []].append((bound, sample.value))
            }
            guard !groups.isEmpty else { throw TestFailure("\(family): a histogram without buckets") }
            for (labels, buckets) in groups {
                let sorted = buckets.sorted { $0.le < $1.le }
                guard sorted.last?.le == .infinity else { throw TestFailure("\(family)\(labels): no +Inf bucket") }
                guard zip(sorted, sorted.dropFirst()).allSatisfy({ $0.count <= $1.count }) else { throw TestFailure("\(family)\(labels): buckets shrink") }
                guard value(family + "_count", labels) == sorted.last?.count, value(family + "_sum", labels) != nil else {
                    throw TestFailure("\(family)\(labels): _count differs from the +Inf bucket, or no _sum")
                }
            }
        }
    }

    /// `x_bucket`, `x_sum`, `x_count` belong to histogram or summary `x`.
    static func family(of name: String, types: [String: String]) -> String {
        for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) {
            let base = String(name.dropLast(suffix.count))
            if let type = types[base], type == "histogram" || type == "summary" { return base }
        }
        return name
    }

    static func isMetricName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first.isASCIILetter || first == "_" || first == ":" else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCIILetter || $0.isASCIIDigit || $0 == "_" || $0 == ":" }
    }

    static func isLabelName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first.isASCIILetter || first == "_", !name.hasPrefix("__") else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCIILetter || $0.isASCIIDigit || $0 == "_" }
    }

    static func isValidHelp(_ text: String) -> Bool {
        var escaped = false
        for c in text.unicodeScalars {
            if escaped { guard c == "\\" || c == "n" else { return false }; escaped = false } else if c == "\\" { escaped = true }
        }
        return !escaped
    }

    /// Go's ParseFloat as the format uses it: decimal or exponent notation, `+Inf`, `-Inf`, `NaN`.
    public static func float(_ text: String) -> Double? {
        switch text {
        case "+Inf", "Inf": return .infinity
        case "-Inf": return -.infinity
        case "NaN": return .nan
        default:
            guard text.unicodeScalars.allSatisfy({ $0.isASCIIDigit || "+-.eE".unicodeScalars.contains($0) }) else { return nil }
            return Double(text)
        }
    }

    static func parseSample(_ line: Substring) throws -> Sample {
        var rest = line[...]
        let name = String(rest.prefix { $0 != "{" && $0 != " " })
        guard isMetricName(name) else { throw TestFailure("bad metric name") }
        rest = rest.dropFirst(name.count)
        var labels: [String: String] = [:]
        if rest.first == "{" {
            rest = rest.dropFirst()
            while rest.first != "}" {
                let label = String(rest.prefix { $0 != "=" })
                guard isLabelName(label) else { throw TestFailure("bad label name \(label)") }
                rest = rest.dropFirst(label.count)
                guard rest.hasPrefix("=\"") else { throw TestFailure("label \(label) has no quoted value") }
                rest = rest.dropFirst(2)
                var value = ""
                var closed = false
                while let c = rest.first {
                    rest = rest.dropFirst()
                    if c == "\"" { closed = true; break }
                    if c == "\\" {
                        switch rest.first {
                        case "\\": value.append("\\")
                        case "\"": value.append("\"")
                        case "n": value.append("\n")
                        default: throw TestFailure("bad escape in label \(label)")
                        }
                        rest = rest.dropFirst()
                    } else if c == "\n" {
                        throw TestFailure("a raw line feed in label \(label)")
                    } else {
                        value.append(c)
                    }
                }
                guard closed else { throw TestFailure("label \(label) is not closed") }
                guard labels.updateValue(value, forKey: label) == nil else { throw TestFailure("label \(label) twice") }
                if rest.first == "," { rest = rest.dropFirst() } else if rest.first != "}" { throw TestFailure("expected , or }") }
            }
            rest = rest.dropFirst()
        }
        let fields = rest.split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count == 2 || fields.count == 3, fields[0].isEmpty else { throw TestFailure("expected one space, a value and maybe a timestamp") }
        guard let value = float(String(fields[1])) else { throw TestFailure("the value is not a float") }
        if fields.count == 3, Int64(fields[2]) == nil { throw TestFailure("the timestamp is not an integer") }
        return Sample(name: name, labels: labels, value: value)
    }
}

private extension Unicode.Scalar {
    var isASCIILetter: Bool { ("a"..."z").contains(self) || ("A"..."Z").contains(self) }
    var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}
