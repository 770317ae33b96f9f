import Glibc

/// A failed datapath operation: what was attempted, on which object, and the kernel's errno.
public struct DatapathError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The operation, e.g. "load program", "attach TCX link".
    public var operation: String
    /// The object: a map, program, pin path or interface.
    public var object: String
    /// The errno reported by the kernel or libbpf (0 when the failure is not an errno).
    public var code: Int32
    public var detail: String?

    public init(_ operation: String, _ object: String, code: Int32, detail: String? = nil) {
        self.operation = operation
        self.object = object
        self.code = code
        self.detail = detail
    }

    public var description: String {
        var text = "\(operation) \(object)"
        if code != 0 { text += ": \(String(cString: strerror(code))) (errno \(code))" }
        if let detail { text += ": \(detail)" }
        return text
    }
}

/// Turns libbpf's `-errno` (or `-1` with `errno`) results into thrown errors.
@discardableResult
func check(_ result: Int32, _ operation: String, _ object: String) throws -> Int32 {
    let code = result == -1 ? errno : -result
    let messages = LibbpfLog.take()
    if result >= 0 { return result }
    throw DatapathError(operation, object, code: code, detail: messages)
}

/// Retries a raw syscall wrapper on EINTR; throws with context on failure.
@discardableResult
func retrying(_ operation: String, _ object: String, _ body: () -> Int32) throws -> Int32 {
    while true {
        let result = body()
        if result >= 0 { return result }
        let code = result == -1 ? errno : -result
        if code == EINTR { continue }
        throw DatapathError(operation, object, code: code)
    }
}
