package proxy

// eventLoops: this OS has the event loops (loop_linux.go), so the tests run
// twice (main_test.go).
const eventLoops = true
