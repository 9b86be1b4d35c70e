// Package cluster runs a nearchat cluster as real processes on loopback:
// Central, chat servers and headless clients (bots), each the binary a
// user runs (bin/central, bin/chatserver, bin/chat -bot), each on free
// loopback ports.
//
// It starts, signals, SIGKILLs, drains and restarts them (Central and
// chat servers on the same addresses, bots with their session token),
// keeps every process's log in one directory, and records every JSON event
// the bots print, in order, both in memory (Recorder: waiting for one
// event never discards another) and in Dir/<bot>.events.jsonl.
//
// cmd/demo, bench/load and the fault-injection harness (bench/chaos) are
// built on it. A chat server may advertise another address than the one
// it listens on and report to another REST address than Central's, and a
// bot may dial another control address: that is how bench/chaos puts a
// fault proxy on every link.
//
// Every method is safe for concurrent use.
package cluster
