// Command riskd-go is the Go implementation of riskd, the fraud/risk decision
// server specified in workloads/riskd/PROTOCOL.md.
//
//	riskd-go --listen HOST:PORT [--workers N] [--accounts A] [--window W]
//	         [--merchants M] [--rules R] [--seed S]
//
// This is the plain, idiomatic variant whose garbage-collector behaviour is
// under test: per-request values are allocated as ordinary Go code does, with
// no pooling.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
)

// options is the parsed command line.
type options struct {
	listen  string
	workers int
	Config
}

// parseFlags parses args (without the program name). Errors are reported on
// stderr by the caller; flag.ErrHelp means -h/--help was asked for.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("riskd-go", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listen, "listen", "", "`HOST:PORT` to listen on (required)")
	fs.IntVar(&o.workers, "workers", runtime.NumCPU(), "threads serving connections (GOMAXPROCS)")
	fs.Uint64Var(&o.Accounts, "accounts", 100000, "accounts pre-loaded with a full window")
	fs.IntVar(&o.Window, "window", 32, "transactions kept per account")
	fs.Uint64Var(&o.Merchants, "merchants", 10000, "merchant ids used by the pre-load")
	fs.IntVar(&o.Rules, "rules", 200, "number of rules")
	fs.Uint64Var(&o.Seed, "seed", 42, "pre-load generator seed")
	if err := fs.Parse(args); err != nil {
		return o, err // the flag package has already printed the problem
	}
	var problem string
	switch {
	case fs.NArg() > 0:
		problem = fmt.Sprintf("unexpected argument %q", fs.Arg(0))
	case o.listen == "":
		problem = "--listen HOST:PORT is required"
	case o.workers < 1:
		problem = fmt.Sprintf("--workers must be at least 1, not %d", o.workers)
	case o.Window < 1:
		problem = fmt.Sprintf("--window must be at least 1, not %d", o.Window)
	case o.Merchants < 1 || o.Merchants > 1<<32:
		problem = fmt.Sprintf("--merchants must be 1..2^32 (merchant ids are u32), not %d", o.Merchants)
	case o.Rules < 1 || o.Rules > maxRules:
		problem = fmt.Sprintf("--rules must be 1..%d (rule ids are u16), not %d", maxRules, o.Rules)
	}
	if problem != "" {
		fmt.Fprintf(stderr, "riskd-go: %s\n", problem)
		return o, errors.New(problem)
	}
	if _, _, err := net.SplitHostPort(o.listen); err != nil {
		fmt.Fprintf(stderr, "riskd-go: bad --listen address: %v\n", err)
		return o, err
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		os.Exit(2)
	}
	runtime.GOMAXPROCS(o.workers)

	// Registered before anything slow, so that a signal at any time after this
	// point still ends in the JSON summary.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)

	// Listening before the pre-load reports an unusable address at once;
	// connections made meanwhile wait in the backlog until serving starts.
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "riskd-go: bad --listen address: %v\n", err)
		os.Exit(2)
	}

	srv := NewServer(NewState(o.Config))
	go srv.Serve(ln)
	fmt.Fprintf(os.Stdout, "READY riskd-go listen=%s accounts=%d window=%d rules=%d\n",
		ln.Addr(), o.Accounts, o.Window, o.Rules) // os.Stdout is unbuffered

	<-sig
	ln.Close()
	srv.Close(5 * time.Second)
	line, err := json.Marshal(collectSummary(srv.requests.Load(), srv.malformed.Load()))
	if err != nil {
		fmt.Fprintf(os.Stderr, "riskd-go: summary: %v\n", err)
		os.Exit(1)
	}
	os.Stdout.Write(append(line, '\n'))
}
