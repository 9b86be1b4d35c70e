// Package bounds checks settings against their accepted ranges and words a
// refusal the way the flag package words a value it cannot parse: the
// setting as its flag is spelled, the value, and what is accepted, on one
// line. The programs' Config.Validate methods build their errors with it,
// and each main exits with Exit, status 2 like an unparsable flag, before
// anything starts.
package bounds

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Error is a setting refused at startup.
type Error struct {
	// Name is the setting as its flag is spelled, without the dash:
	// "loops".
	Name string
	// Value is the value refused, as it would be written on the command
	// line.
	Value string
	// Want says what is accepted: "1 to 1024".
	Want string
}

func (e *Error) Error() string {
	return fmt.Sprintf("invalid value %s for -%s: want %s", e.Value, e.Name, e.Want)
}

// Number is what Range and AtLeast check.
type Number interface {
	~int | ~int64 | ~float64
}

// Range returns an *Error unless lo <= v <= hi.
func Range[T Number](name string, v, lo, hi T) error {
	if v >= lo && v <= hi && !isNaN(v) {
		return nil
	}
	return &Error{Name: name, Value: format(v), Want: format(lo) + " to " + format(hi)}
}

// AtLeast returns an *Error unless v >= lo.
func AtLeast[T Number](name string, v, lo T) error {
	if v >= lo && !isNaN(v) {
		return nil
	}
	return &Error{Name: name, Value: format(v), Want: "at least " + format(lo)}
}

// Fail returns an *Error for a value refused by a rule of its own, want
// saying what is accepted.
func Fail(name string, value any, want string) error {
	v := format(value)
	if s, ok := value.(string); ok {
		v = strconv.Quote(s)
	}
	return &Error{Name: name, Value: v, Want: want}
}

// Addr returns an *Error unless v is host:port with a port from 0 to
// 65535 (0: any free port), as a listener takes it. With optional, an
// empty v is accepted too (the setting is off).
func Addr(name, v string, optional bool) error { return hostPort(name, v, optional, 0) }

// DialAddr is Addr for an address to dial: the host must be given and the
// port must be 1 to 65535.
func DialAddr(name, v string, optional bool) error { return hostPort(name, v, optional, 1) }

// hostPort checks v as host:port with a port from lo to 65535; with lo 1,
// an address to dial, the host must not be empty.
func hostPort(name, v string, optional bool, lo int) error {
	if v == "" && optional {
		return nil
	}
	want := fmt.Sprintf("host:port, port %d to 65535", lo)
	if optional {
		want += ", or empty for none"
	}
	if host, port, err := net.SplitHostPort(v); err != nil || (lo > 0 && host == "") || !validPort(port, lo) {
		return Fail(name, v, want)
	}
	return nil
}

func validPort(p string, lo int) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= lo && n <= 65535
}

// First returns the first non-nil error of errs: a Validate lists its
// checks in flag order and reports the first refused, on one line.
func First(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Exit prints err as "prog: err" on stderr and exits with status 2, as
// the flag package does for a value it cannot parse.
func Exit(prog string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
	os.Exit(2)
}

// Is reports whether err is, or wraps, an *Error.
func Is(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

func isNaN[T Number](v T) bool {
	f, ok := any(v).(float64)
	return ok && math.IsNaN(f)
}

func format(v any) string {
	switch v := v.(type) {
	case time.Duration:
		return Duration(v)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	return fmt.Sprint(v)
}

// Duration writes d as a flag would take it, without the zero units
// time.Duration.String leaves: 1h rather than 1h0m0s.
func Duration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// FromEnv gives each named flag of fs that the command line left unset
// the value of its environment variable, when that is set. A secret's
// flag takes its default this way, after parsing, rather than as the
// flag's default value, which -h would print for anyone to paste
// (usability review 7, H2). vars maps flag names (without the dash) to
// variable names. It returns the first value the flag refuses.
func FromEnv(fs *flag.FlagSet, vars map[string]string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for name, env := range vars {
		v, ok := os.LookupEnv(env)
		if given[name] || !ok || v == "" {
			continue
		}
		if err := fs.Set(name, v); err != nil {
			return fmt.Errorf("$%s: %w", env, err)
		}
	}
	return nil
}

// NoArgs exits 2 with one line (Stray's) if fs left arguments of args
// unparsed: every setting is a flag.
func NoArgs(prog string, fs *flag.FlagSet, args []string) {
	if fs.NArg() == 0 {
		return
	}
	fmt.Fprintln(os.Stderr, Stray(prog, fs, args))
	os.Exit(2)
}

// Stray words the refusal of the first argument fs left unparsed. A
// "true" or "false" after a boolean flag gets the hint the flag package
// does not give: -flag false ends the flags at "false"; the value is
// written -flag=false.
func Stray(prog string, fs *flag.FlagSet, args []string) string {
	stray := fs.Arg(0)
	hint := ""
	if i := len(args) - fs.NArg(); i > 0 && (stray == "true" || stray == "false") {
		name := strings.TrimLeft(args[i-1], "-")
		if f := fs.Lookup(name); f != nil {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
				hint = fmt.Sprintf(": a boolean flag takes its value as -%s=%s", name, stray)
			}
		}
	}
	return fmt.Sprintf("%s: unexpected argument %q%s (every setting is a flag; -h lists them)", prog, stray, hint)
}

// Parse parses args with fs the way every nearchat program does: -h
// prints the usage to stdout and exits 0; a value that does not parse is
// one line naming the flag, with a hint of the form it takes (a duration
// such as 5s), and exit 2, instead of the flag package's error followed
// by the whole usage (98 lines for Central: usability review 7, L1); an
// argument that is not a flag is refused as NoArgs does.
func Parse(prog string, fs *flag.FlagSet, args []string) {
	usage := fs.Usage
	fs.Init(prog, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(nil)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(os.Stdout)
		if usage != nil {
			usage()
		} else {
			fs.PrintDefaults()
		}
		os.Exit(0)
	case err != nil:
		fmt.Fprintf(os.Stderr, "%s: %s%s (-h lists the flags)\n", prog, err, parseHint(fs, err))
		os.Exit(2)
	}
	NoArgs(prog, fs, args)
}

// parseHint says what form the value of the flag err names takes, when
// the flag package does not.
func parseHint(fs *flag.FlagSet, err error) string {
	msg := err.Error()
	i := strings.Index(msg, " for flag -")
	if i < 0 {
		return ""
	}
	name := msg[i+len(" for flag -"):]
	if j := strings.IndexByte(name, ':'); j >= 0 {
		name = name[:j]
	}
	f := fs.Lookup(name)
	if f == nil {
		return ""
	}
	switch f.Value.(type) {
	case interface{ IsBoolFlag() bool }:
		return ": want true or false"
	}
	switch fmt.Sprintf("%T", f.Value) {
	case "*flag.durationValue":
		return ": want a duration such as 500ms, 5s or 2m"
	case "*flag.intValue", "*flag.int64Value", "*flag.uintValue", "*flag.uint64Value":
		if strings.Contains(f.Usage, "bytes") {
			return ": want a whole number of bytes, such as 4194304 (no unit)"
		}
		return ": want a whole number"
	case "*flag.float64Value":
		return ": want a number such as 1.5"
	}
	return ""
}
