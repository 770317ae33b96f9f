import CFuzzer
import Glibc

/// Hands the process to libFuzzer's driver. SwiftPM gives every executable module its own
/// `main`, so libFuzzer's `main` is never linked in: each target's main.swift calls this with
/// its `LLVMFuzzerTestOneInput`, and libFuzzer's command line works as usual.
public func runFuzzer(_ testOneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> Never {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, testOneInput))
}
