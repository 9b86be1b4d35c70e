// Command chatserver runs one nearchat chat server: rooms, broadcast and the
// TCP echo that clients probe for round-trip times.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"nearchat/chatserver"
)

func main() {
	cfg := chatserver.DefaultConfig()
	fs := flag.NewFlagSet("chatserver", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: chatserver [flags]\n\nServes nearchat rooms on a gnet event loop.\n\nflags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "TCP `address` to serve chat on")
	fs.StringVar(&cfg.ID, "id", cfg.ID, "server `name` announced to clients and Central (default chat-<port>)")
	fs.IntVar(&cfg.Loops, "loops", cfg.Loops, "event loops (0: one per CPU)")
	fs.IntVar(&cfg.MaxConns, "max-conns", cfg.MaxConns, "maximum open connections")
	fs.IntVar(&cfg.MaxRooms, "max-rooms", cfg.MaxRooms, "maximum rooms hosted")
	fs.IntVar(&cfg.MaxMembers, "max-members", cfg.MaxMembers, "maximum members of one room")
	fs.IntVar(&cfg.MaxOutbound, "max-outbound", cfg.MaxOutbound, "unsent `bytes` after which a member is cut off as a slow consumer")
	fs.IntVar(&cfg.History, "history", cfg.History, "recent messages kept per room for reconnecting members")
	fs.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", cfg.ShutdownGrace, "how long shutdown waits for goodbye frames")
	verbose := fs.Bool("v", false, "log debug detail")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "chatserver: unexpected argument %q\n", fs.Arg(0))
		os.Exit(2)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := chatserver.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := s.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
