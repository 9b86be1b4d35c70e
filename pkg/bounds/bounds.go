// Package bounds checks settings against their accepted ranges and words a
// refusal the way the flag package words a value it cannot parse: the
// setting as its flag is spelled, the value, and what is accepted, on one
// line. The programs' Config.Validate methods build their errors with it,
// and each main exits with Exit, status 2 like an unparsable flag, before
// anything starts.
package bounds

import (
	"errors"
	"fmt"
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
