import Config

/// One configuration file's bytes: a configuration or errors, never a crash, a hang or a blow-up
/// in memory (libFuzzer's -timeout and -rss_limit_mb catch those). Key files are never read.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    switch ConfigLoader().load(text: bytes, file: "fuzz.yaml") {
    case .success(let loaded):
        _ = loaded.summary
    case .failure(let errors):
        // Every error names a place in the input.
        for error in errors.errors where error.location.file != "fuzz.yaml" || error.location.line < 1 || error.location.column < 1 {
            fatalError("error without a place in the input: \(error)")
        }
    }
    return 0
}
