//go:build race

package chatserver

// raceEnabled says the race detector is on: sync.Pool then drops a
// quarter of what it is given, at random.
const raceEnabled = true
