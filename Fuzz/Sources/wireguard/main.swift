import FuzzDriver

runFuzzer(fuzzWireGuard)
