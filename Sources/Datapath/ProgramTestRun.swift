import CBPF
import Glibc

/// One BPF_PROG_TEST_RUN of a loaded program (a descriptor) on `frame`: the call's status, the
/// program's verdict, the kernel's average nanoseconds per repetition, and the packet as the
/// program left it. For the tests and `wgkeeper-bench programs`; the daemon never calls it.
public func programTestRun(_ program: Int32, _ frame: [UInt8], repeat count: Int32)
    -> (status: Int32, verdict: Int, nanoseconds: UInt32, output: [UInt8]) {
    var input = frame
    var output = [UInt8](repeating: 0, count: 4096)
    var options = bpf_test_run_opts()
    options.sz = MemoryLayout<bpf_test_run_opts>.size
    options.repeat = count
    options.data_size_in = UInt32(input.count)
    options.data_size_out = UInt32(output.count)
    let status = input.withUnsafeMutableBytes { inputBytes in
        output.withUnsafeMutableBytes { outputBytes in
            options.data_in = UnsafeRawPointer(inputBytes.baseAddress)
            options.data_out = outputBytes.baseAddress
            return bpf_prog_test_run_opts(program, &options)
        }
    }
    return (status, Int(Int32(bitPattern: options.retval)), options.duration, Array(output.prefix(Int(options.data_size_out))))
}
