/// One request line on the status socket (README, operations): a flat JSON object with a `command`
/// member, such as `{"command":"status"}`. Parsed by a small strict reader rather than a general
/// JSON library: the input comes from other users, so it is bounded, flat and never recursed into.
public enum StatusRequest: Equatable, Sendable {
    case status
    case reload

    /// Longest request line accepted, without its newline.
    public static let maxBytes = 4096

    /// A request, or why the line is not one. `line` excludes the newline.
    public static func parse(_ line: [UInt8]) -> Result<StatusRequest, StatusRequestError> {
        guard line.count <= maxBytes else { return .failure(.tooLong(line.count)) }
        var reader = FlatJSONReader(line)
        if reader.atEnd { return .failure(.empty) }
        let members: [String: FlatJSONReader.Value]
        do { members = try reader.object() } catch { return .failure(.malformed("\(error)")) }
        guard let value = members["command"] else { return .failure(.malformed("no \"command\" member")) }
        guard case .string(let command) = value else { return .failure(.malformed("\"command\" must be a string")) }
        switch command {
        case "status": return .success(.status)
        case "reload": return .success(.reload)
        default: return .failure(.unknownCommand(command))
        }
    }
}

public enum StatusRequestError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A blank line: ignored, not answered.
    case empty
    case tooLong(Int)
    case malformed(String)
    case unknownCommand(String)

    public var description: String {
        switch self {
        case .empty: "empty request"
        case .tooLong(let count): "request of \(count) bytes is longer than \(StatusRequest.maxBytes)"
        case .malformed(let why): #"expected one JSON object per line, such as {"command":"status"}: "# + why
        case .unknownCommand(let name):
            // Echo a bounded, printable prefix only: the reply goes back to an untrusted client.
            "unknown command \"\(String(name.unicodeScalars.prefix(40).filter { $0.value >= 0x20 && $0.value < 0x7f }.map(Character.init)))\"; known: status, reload"
        }
    }
}

/// Reads one JSON object whose member values are scalars (string, number, true, false, null).
/// Nested objects and arrays are refused, so there is no recursion and no depth to bound.
struct FlatJSONReader {
    enum Value: Equatable {
        case string(String), number, bool(Bool), null
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    private let bytes: [UInt8]
    private var at = 0

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
        skipSpace()
    }

    var atEnd: Bool { at == bytes.count }

    mutating func object() throws -> [String: Value] {
        try expect(UInt8(ascii: "{"))
        var members: [String: Value] = [:]
        skipSpace()
        if peek == UInt8(ascii: "}") {
            at += 1
        } else {
            while true {
                skipSpace()
                let key = try string()
                skipSpace()
                try expect(UInt8(ascii: ":"))
                skipSpace()
                let value = try scalar()
                if members.updateValue(value, forKey: key) != nil { throw Failure("member \"\(key.prefix(40))\" appears twice") }
                skipSpace()
                guard let next = peek else { throw Failure("unterminated object") }
                at += 1
                if next == UInt8(ascii: "}") { break }
                guard next == UInt8(ascii: ",") else { throw Failure("expected , or } at byte \(at)") }
            }
        }
        skipSpace()
        guard atEnd else { throw Failure("unexpected bytes after the object at byte \(at + 1)") }
        return members
    }

    private var peek: UInt8? { at < bytes.count ? bytes[at] : nil }

    private mutating func skipSpace() {
        while let byte = peek, byte == 0x20 || byte == 0x09 || byte == 0x0d || byte == 0x0a { at += 1 }
    }

    private mutating func expect(_ byte: UInt8) throws {
        guard peek == byte else { throw Failure("expected \(Character(Unicode.Scalar(byte))) at byte \(at + 1)") }
        at += 1
    }

    private mutating func scalar() throws -> Value {
        switch peek {
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "{"), UInt8(ascii: "["): throw Failure("nested values are not accepted")
        default: try number(); return .number
        }
    }

    private mutating func literal(_ word: String) throws {
        let expected = Array(word.utf8)
        guard bytes.count - at >= expected.count, Array(bytes[at..<at + expected.count]) == expected else {
            throw Failure("invalid literal at byte \(at + 1)")
        }
        at += expected.count
    }

    /// RFC 8259 number grammar; the value itself is not needed.
    private mutating func number() throws {
        let start = at
        func digits() -> Int {
            let from = at
            while let byte = peek, (0x30...0x39).contains(byte) { at += 1 }
            return at - from
        }
        if peek == UInt8(ascii: "-") { at += 1 }
        if peek == UInt8(ascii: "0") { at += 1 } else if digits() == 0 { throw Failure("invalid value at byte \(start + 1)") }
        if peek == UInt8(ascii: ".") {
            at += 1
            guard digits() > 0 else { throw Failure("invalid number at byte \(start + 1)") }
        }
        if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
            at += 1
            if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { at += 1 }
            guard digits() > 0 else { throw Failure("invalid number at byte \(start + 1)") }
        }
    }

    private mutating func string() throws -> String {
        try expect(UInt8(ascii: "\""))
        var scalars = String.UnicodeScalarView()
        var raw: [UInt8] = []
        func flushRaw() throws {
            guard !raw.isEmpty else { return }
            // Validates UTF-8: String(validating:) refuses ill-formed sequences.
            guard let text = String(validating: raw, as: UTF8.self) else { throw Failure("invalid UTF-8 in a string") }
            scalars.append(contentsOf: text.unicodeScalars)
            raw = []
        }
        while true {
            guard let byte = peek else { throw Failure("unterminated string") }
            at += 1
            switch byte {
            case UInt8(ascii: "\""):
                try flushRaw()
                return String(scalars)
            case UInt8(ascii: "\\"):
                try flushRaw()
                guard let escaped = peek else { throw Failure("unterminated string") }
                at += 1
                switch escaped {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): scalars.append(Unicode.Scalar(escaped))
                case UInt8(ascii: "b"): scalars.append("\u{08}")
                case UInt8(ascii: "f"): scalars.append("\u{0C}")
                case UInt8(ascii: "n"): scalars.append("\n")
                case UInt8(ascii: "r"): scalars.append("\r")
                case UInt8(ascii: "t"): scalars.append("\t")
                case UInt8(ascii: "u"): scalars.append(try unicodeEscape())
                default: throw Failure("invalid escape at byte \(at)")
                }
            case 0..<0x20:
                throw Failure("control character in a string at byte \(at)")
            default:
                raw.append(byte)
            }
        }
    }

    /// After `\u`: four hex digits, or a surrogate pair written as two escapes.
    private mutating func unicodeEscape() throws -> Unicode.Scalar {
        let first = try hex4()
        if (0xD800...0xDBFF).contains(first) {
            guard peek == UInt8(ascii: "\\"), at + 1 < bytes.count, bytes[at + 1] == UInt8(ascii: "u") else {
                throw Failure("unpaired surrogate at byte \(at)")
            }
            at += 2
            let second = try hex4()
            guard (0xDC00...0xDFFF).contains(second) else { throw Failure("unpaired surrogate at byte \(at)") }
            return Unicode.Scalar(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))!
        }
        guard let scalar = Unicode.Scalar(first) else { throw Failure("unpaired surrogate at byte \(at)") }
        return scalar
    }

    private mutating func hex4() throws -> UInt32 {
        guard bytes.count - at >= 4 else { throw Failure("short \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[at]
            let digit: UInt8
            switch byte {
            case 0x30...0x39: digit = byte - 0x30
            case 0x41...0x46: digit = byte - 0x41 + 10
            case 0x61...0x66: digit = byte - 0x61 + 10
            default: throw Failure("invalid \\u escape at byte \(at + 1)")
            }
            value = value << 4 | UInt32(digit)
            at += 1
        }
        return value
    }
}
