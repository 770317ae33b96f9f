import CYAML

/// One event of libyaml's parser (`yaml_parser_parse`), as a Swift value. libyaml's parser is
/// a state machine with explicit stacks, so no input makes it recurse; the tree is built from
/// these events by `Tree.parse`, with a stack of its own.
enum YAMLEvent {
    /// Line and column, both counted from 1.
    typealias Mark = (line: Int, column: Int)

    /// What starts a node (or, for an alias, stands for one).
    enum Node {
        case scalar(String, plain: Bool, anchor: String?)
        case sequence(anchor: String?)
        case mapping(anchor: String?)
        case alias(String)
    }

    case documentStart(Mark)
    case documentEnd
    case node(Node, Mark)
    /// The end of the innermost open list or mapping.
    case end
    case streamEnd
}

/// A syntax error as libyaml reports it.
struct YAMLSyntaxError: Error {
    var message: String
    var mark: YAMLEvent.Mark?
}

/// Reads events from UTF-8 text. The text is copied once; the parser lives as long as this value.
final class YAMLEventReader {
    private var parser = yaml_parser_t()
    private let bytes: UnsafeMutableBufferPointer<UInt8>

    init(_ text: String) {
        var text = text
        text.makeContiguousUTF8()
        let count = text.utf8.count
        bytes = .allocate(capacity: max(count, 1))
        let bytes = bytes
        text.utf8.withContiguousStorageIfAvailable { _ = bytes.initialize(from: $0) }
        yaml_parser_initialize(&parser)
        yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING)
        yaml_parser_set_input_string(&parser, bytes.baseAddress, count)
    }

    deinit {
        yaml_parser_delete(&parser)
        bytes.deallocate()
    }

    func next() throws(YAMLSyntaxError) -> YAMLEvent {
        var event = yaml_event_t()
        while true {
            guard yaml_parser_parse(&parser, &event) == 1 else { throw syntaxError() }
            defer { yaml_event_delete(&event) }
            let mark = (line: Int(event.start_mark.line) + 1, column: Int(event.start_mark.column) + 1)
            switch event.type {
            case YAML_DOCUMENT_START_EVENT: return .documentStart(mark)
            case YAML_DOCUMENT_END_EVENT: return .documentEnd
            case YAML_STREAM_END_EVENT: return .streamEnd
            case YAML_SCALAR_EVENT:
                let s = event.data.scalar
                return .node(.scalar(Self.text(s.value, count: s.length), plain: s.style == YAML_PLAIN_SCALAR_STYLE,
                                     anchor: Self.anchor(s.anchor)), mark)
            case YAML_SEQUENCE_START_EVENT: return .node(.sequence(anchor: Self.anchor(event.data.sequence_start.anchor)), mark)
            case YAML_MAPPING_START_EVENT: return .node(.mapping(anchor: Self.anchor(event.data.mapping_start.anchor)), mark)
            case YAML_ALIAS_EVENT: return .node(.alias(Self.anchor(event.data.alias.anchor) ?? ""), mark)
            case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT: return .end
            default: continue  // stream start, no-op
            }
        }
    }

    private func syntaxError() -> YAMLSyntaxError {
        let problem = parser.problem.map { String(cString: $0) } ?? "unknown error"
        switch parser.error {
        case YAML_SCANNER_ERROR, YAML_PARSER_ERROR:
            // The context mark is where the construct began (an unterminated quote), the
            // problem mark where it went wrong (often the end of the file).
            var context = ""
            if let text = parser.context {
                let start = parser.context_mark
                context = "\(String(cString: text)) (from \(start.line + 1):\(start.column + 1)), "
            }
            let mark = parser.problem_mark
            return YAMLSyntaxError(message: "YAML syntax: \(context)\(problem)", mark: (Int(mark.line) + 1, Int(mark.column) + 1))
        case YAML_READER_ERROR:
            // The reader sets no mark, only the offending byte's offset and character.
            let value = parser.problem_value
            let hex = String(value, radix: 16, uppercase: true)
            let character = value >= 0 ? " (U+\(String(repeating: "0", count: max(0, 4 - hex.count)) + hex))" : ""
            return YAMLSyntaxError(message: "YAML: \(problem)\(character)",
                                   mark: Self.mark(atByte: parser.problem_offset, in: UnsafeBufferPointer(bytes)))
        default:
            return YAMLSyntaxError(message: "YAML: \(problem)", mark: nil)
        }
    }

    /// The line and column of byte `offset`, counted as libyaml counts its marks: columns in
    /// characters, lines ended by LF, CR, CR LF, NEL, LS or PS, a leading byte order mark not counted.
    static func mark(atByte offset: Int, in bytes: some Collection<UInt8>) -> YAMLEvent.Mark {
        let bom: [UInt8] = [0xEF, 0xBB, 0xBF]
        var line = 1, column = 1
        var before: (UInt8, UInt8) = (0, 0)  // the two bytes before the current one
        for (i, byte) in bytes.prefix(offset).enumerated() {
            defer { before = (before.1, byte) }
            if i < 3, bytes.starts(with: bom) { continue }
            switch byte {
            case 0x0A where before.1 == 0x0D:
                break  // CR LF: the CR ended the line
            case 0x0A, 0x0D:
                (line, column) = (line + 1, 1)
            case 0x85 where before.1 == 0xC2, 0xA8 where before == (0xE2, 0x80), 0xA9 where before == (0xE2, 0x80):
                (line, column) = (line + 1, 1)  // NEL, LS, PS: their lead byte's column is undone
            case 0x80...0xBF:
                break  // a continuation byte: its character was counted at its lead byte
            default:
                column += 1
            }
        }
        return (line, column)
    }

    private static func anchor(_ pointer: UnsafeMutablePointer<yaml_char_t>?) -> String? {
        pointer.map { String(cString: $0) }
    }

    private static func text(_ pointer: UnsafeMutablePointer<yaml_char_t>?, count: Int) -> String {
        guard let pointer else { return "" }
        return String(decoding: UnsafeBufferPointer(start: pointer, count: count), as: UTF8.self)
    }
}
