import FuzzDriver

runFuzzer(fuzzStatusRequest)
