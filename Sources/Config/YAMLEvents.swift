import CYAML

/// One event of libyaml's parser (`yaml_parser_parse`), as a Swift value. libyaml's parser is
/// a state machine with explicit stacks, so no input makes it recurse; the tree is built from
/// these events by `Tree.parse`, with a stack of its own.
enum YAMLEvent {
    /// Line and column, both counted from 1.
    typealias Mark = (line: Int, column: Int)

    /// What starts a node (or, for an alias, stands for one). A scalar's bytes are libyaml's,
    /// valid until the reader's next event.
    enum Node {
        case scalar(UnsafeBufferPointer<UInt8>, plain: Bool, anchor: String?)
        /// `flow`: written `[…]`, not as `- ` items.
        case sequence(anchor: String?, flow: Bool)
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

/// Reads events from UTF-8 text, which it borrows: `read(_:_:)` hands the reader out only while
/// the text's bytes are there (a configuration of 50 000 peers is 7 MiB of text, not copied).
final class YAMLEventReader {
    // libyaml's state and the last event, where libyaml writes them: a stored C struct passed
    // `inout` would cost a dynamic exclusivity check at each use, several per event.
    private let parser = UnsafeMutablePointer<yaml_parser_t>.allocate(capacity: 1)
    let bytes: UnsafeBufferPointer<UInt8>
    /// The last event returned, deleted at the next call (a scalar's bytes are its own).
    private let event = UnsafeMutablePointer<yaml_event_t>.allocate(capacity: 1)
    private var holdsEvent = false
    /// A character's place and its byte's, where `byteOffset(ofCharacter:)` last stopped.
    private var cursor = (character: 0, byte: 0)

    /// Runs `body` with a reader of `bytes`, which must stay where they are until it returns.
    static func read<T>(_ bytes: UnsafeBufferPointer<UInt8>, _ body: (YAMLEventReader) throws -> T) rethrows -> T {
        try body(YAMLEventReader(bytes))
    }

    private init(_ bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
        parser.initialize(to: yaml_parser_t())
        event.initialize(to: yaml_event_t())
        yaml_parser_initialize(parser)
        yaml_parser_set_encoding(parser, YAML_UTF8_ENCODING)
        // A leading byte order mark (as some editors save UTF-8) is not given to libyaml: with the
        // encoding set, it would read it as a character of the first line, whose key would then
        // start in column 2 and the file fail to parse. Its marks then count from after it.
        let skipped = bytes.starts(with: Self.byteOrderMark) ? Self.byteOrderMark.count : 0
        bomLength = skipped
        cursor = (0, skipped)
        // libyaml only reads the input; an empty text still needs an address.
        let empty: StaticString = ""
        yaml_parser_set_input_string(parser, bytes.baseAddress.map { $0 + skipped } ?? empty.utf8Start, bytes.count - skipped)
    }

    static let byteOrderMark: [UInt8] = [0xEF, 0xBB, 0xBF]
    /// The bytes of a leading byte order mark (3), not given to libyaml, or 0.
    private let bomLength: Int

    deinit {
        if holdsEvent { yaml_event_delete(event) }
        yaml_parser_delete(parser)
        parser.deallocate()
        event.deallocate()
    }

    func next() throws(YAMLSyntaxError) -> YAMLEvent {
        while true {
            if holdsEvent { yaml_event_delete(event) }
            holdsEvent = false
            guard yaml_parser_parse(parser, event) == 1 else { throw syntaxError() }
            holdsEvent = true
            let mark = (line: Int(event.pointee.start_mark.line) + 1, column: Int(event.pointee.start_mark.column) + 1)
            switch event.pointee.type {
            case YAML_DOCUMENT_START_EVENT: return .documentStart(mark)
            case YAML_DOCUMENT_END_EVENT: return .documentEnd
            case YAML_STREAM_END_EVENT: return .streamEnd
            case YAML_SCALAR_EVENT:
                let s = event.pointee.data.scalar
                return .node(.scalar(UnsafeBufferPointer(start: UnsafePointer(s.value), count: s.value == nil ? 0 : s.length), plain: s.style == YAML_PLAIN_SCALAR_STYLE,
                                     anchor: Self.anchor(s.anchor)), mark)
            case YAML_SEQUENCE_START_EVENT:
                let start = event.pointee.data.sequence_start
                return .node(.sequence(anchor: Self.anchor(start.anchor), flow: start.style == YAML_FLOW_SEQUENCE_STYLE), mark)
            case YAML_MAPPING_START_EVENT: return .node(.mapping(anchor: Self.anchor(event.pointee.data.mapping_start.anchor)), mark)
            case YAML_ALIAS_EVENT: return .node(.alias(Self.anchor(event.pointee.data.alias.anchor) ?? ""), mark)
            case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT: return .end
            default: continue  // stream start, no-op
            }
        }
    }

    /// Where the last event starts: line and column, from 1.
    var startMark: YAMLEvent.Mark { (Int(event.pointee.start_mark.line) + 1, Int(event.pointee.start_mark.column) + 1) }

    /// Where the last event starts in the text, in bytes.
    var startOffset: Int { byteOffset(ofCharacter: Int(event.pointee.start_mark.index)) }

    /// Where the last event ends in the text, in bytes. A block list's or mapping's end is
    /// where the next token starts: its range holds the comments and blank lines after it.
    var endOffset: Int { byteOffset(ofCharacter: Int(event.pointee.end_mark.index)) }

    /// libyaml's marks count characters, not bytes: every byte but a UTF-8 continuation byte
    /// (a CR LF is two), from after a leading byte order mark (not given to libyaml). Events
    /// come in the text's order, so the cursor moves a little at a time, 8 ASCII bytes a step.
    private func byteOffset(ofCharacter target: Int) -> Int {
        var (character, byte) = cursor
        let base = bytes.baseAddress
        while character > target {
            byte -= 1
            if base![byte] & 0xC0 != 0x80 { character -= 1 }
        }
        while character < target, byte < bytes.count {
            if target - character >= 8, bytes.count - byte >= 8,
               UnsafeRawPointer(base! + byte).loadUnaligned(as: UInt64.self) & 0x8080_8080_8080_8080 == 0 {
                (character, byte) = (character + 8, byte + 8)
                continue
            }
            byte += 1
            // The next character starts at the next byte that is not a continuation.
            while byte < bytes.count, base![byte] & 0xC0 == 0x80 { byte += 1 }
            character += 1
        }
        cursor = (character, byte)
        return byte
    }

    private func syntaxError() -> YAMLSyntaxError {
        let problem = parser.pointee.problem.map { String(cString: $0) } ?? "unknown error"
        switch parser.pointee.error {
        case YAML_SCANNER_ERROR, YAML_PARSER_ERROR:
            // The context mark is where the construct began (an unterminated quote), the
            // problem mark where it went wrong (often the end of the file).
            var context = ""
            if let text = parser.pointee.context {
                let start = parser.pointee.context_mark
                context = "\(String(cString: text)) (from \(start.line + 1):\(start.column + 1)), "
            }
            let mark = parser.pointee.problem_mark
            return YAMLSyntaxError(message: "YAML syntax: \(context)\(problem)", mark: (Int(mark.line) + 1, Int(mark.column) + 1))
        case YAML_READER_ERROR:
            // The reader sets no mark, only the offending byte's offset and character.
            let value = parser.pointee.problem_value
            let hex = String(value, radix: 16, uppercase: true)
            let character = value >= 0 ? " (U+\(String(repeating: "0", count: max(0, 4 - hex.count)) + hex))" : ""
            return YAMLSyntaxError(message: "YAML: \(problem)\(character)",
                                   mark: Self.mark(atByte: parser.pointee.problem_offset + bomLength, in: bytes))
        default:
            return YAMLSyntaxError(message: "YAML: \(problem)", mark: nil)
        }
    }

    /// The line and column of byte `offset`, counted as libyaml counts its marks: columns in
    /// characters, lines ended by LF, CR, CR LF, NEL, LS or PS, a leading byte order mark not counted.
    static func mark(atByte offset: Int, in bytes: some Collection<UInt8>) -> YAMLEvent.Mark {
        let bom = byteOrderMark
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
}
