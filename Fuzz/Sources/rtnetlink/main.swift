import FuzzDriver

runFuzzer(fuzzRTNetlink)
