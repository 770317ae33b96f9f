import Daemon
import Foundation

/// One request line from a status client (another local user: untrusted). Parsed or refused,
/// never a crash; and where Foundation's JSON reader also reads the line, both agree on the
/// command (the strict reader may refuse more, never read differently).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzStatusRequest(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let line = Array(UnsafeBufferPointer(start: data, count: size))
    let result = StatusRequest.parse(line)
    if case .failure(.tooLong) = result {
        guard line.count > StatusRequest.maxBytes else { fatalError("a line of \(line.count) bytes refused as too long") }
        return 0
    }
    guard line.count <= StatusRequest.maxBytes else { fatalError("a line of \(line.count) bytes was not refused as too long") }
    switch result {
    case .success(let request):
        let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any]
        if let command = object?["command"] as? String, command != "\(request)" {
            fatalError("parsed as \(request), but the line's command is \(command)")
        }
    case .failure(let error):
        _ = error.description
    }
    return 0
}
