package pki

import (
	"fmt"
	"os"
	"sync"
	"time"
)

// ClockShiftEnv names the environment variable that moves the clock of
// every test, and of every certificate this package makes, by a Go
// duration ("8760h" is a year ahead, "-8760h" a year back). make test runs
// the pure packages a second time with it set, so that a test that mixes a
// fixed date with certificates made at the real time fails today, not next
// week. Tests that start an API server cannot be moved: the server checks
// client certificates against the real clock (test/cluster refuses a shift).
const ClockShiftEnv = "KCC_TEST_CLOCK_SHIFT"

// Now is the clock of tests: the real time, moved by ClockShiftEnv. A test
// takes its "now" from here and so do the certificates of this package, so
// that the two always agree, whatever the date. A value that does not parse
// panics: a guard that silently ran unshifted would prove nothing.
func Now() time.Time { return time.Now().Add(ClockShift()) }

// ClockShift is the duration ClockShiftEnv moves the clock by (0 when it is
// unset).
func ClockShift() time.Duration {
	d, err := clockShift()
	if err != nil {
		panic(err)
	}
	return d
}

var clockShift = sync.OnceValues(func() (time.Duration, error) {
	s := os.Getenv(ClockShiftEnv)
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s=%q is not a Go duration such as 8760h: %w", ClockShiftEnv, s, err)
	}
	return d, nil
})
