package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"os"
	"runtime/metrics"
	"slices"
	"syscall"
	"testing"
	"time"
)

// vectors mirrors workloads/riskd/vectors.json, written by reference.py.
type vectors struct {
	Protocol int `json:"protocol"`
	Flags    struct {
		Accounts  uint64 `json:"accounts"`
		Window    int    `json:"window"`
		Merchants uint64 `json:"merchants"`
		Rules     int    `json:"rules"`
		Seed      uint64 `json:"seed"`
	} `json:"flags"`
	Cases []struct {
		Request  string `json:"request"`
		Response string `json:"response"`
	} `json:"cases"`
	Malformed []struct {
		Why   string `json:"why"`
		Frame string `json:"frame"`
	} `json:"malformed"`
}

func loadVectors(t *testing.T) (*vectors, Config) {
	t.Helper()
	data, err := os.ReadFile("../vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	if v.Protocol != 1 || len(v.Cases) == 0 || len(v.Malformed) == 0 {
		t.Fatalf("unexpected vectors.json: protocol %d, %d cases, %d malformed",
			v.Protocol, len(v.Cases), len(v.Malformed))
	}
	f := v.Flags
	return &v, Config{Accounts: f.Accounts, Window: f.Window, Merchants: f.Merchants, Rules: f.Rules, Seed: f.Seed}
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSplitmix64(t *testing.T) {
	// Well-known first outputs of splitmix64 seeded with 0.
	rng := splitmix64{}
	for i, want := range []uint64{0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F} {
		if got := rng.next(); got != want {
			t.Fatalf("output %d = %#x, want %#x", i, got, want)
		}
	}
}

// TestVectors runs every case of vectors.json through the decision function in
// order, with all malformed payloads sent first: they must be rejected and must
// leave the state untouched.
func TestVectors(t *testing.T) {
	v, cfg := loadVectors(t)
	s := NewState(cfg)
	for _, m := range v.Malformed {
		payload, err := readFrame(bytes.NewReader(unhex(t, m.Frame)))
		if err == nil {
			_, err = s.Handle(payload)
		}
		if err == nil {
			t.Errorf("malformed frame (%s) accepted", m.Why)
		}
	}
	for i, c := range v.Cases {
		got, err := s.Handle(unhex(t, c.Request))
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if hex.EncodeToString(got) != c.Response {
			t.Fatalf("case %d:\n got  %x\n want %s", i, got, c.Response)
		}
	}
}

func TestReadFrame(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want error
	}{
		{"", io.EOF},
		{"0000", io.ErrUnexpectedEOF},
		{"00000000", errMalformed},
		{"00001001", errMalformed},
		{"00000002aa", io.ErrUnexpectedEOF},
		{"00000001aa", nil},
	} {
		in, _ := hex.DecodeString(tc.in)
		if _, err := readFrame(bytes.NewReader(in)); !errors.Is(err, tc.want) {
			t.Errorf("readFrame(%s) error = %v, want %v", tc.in, err, tc.want)
		}
	}
}

// TestServer serves the vectors over TCP and checks that a malformed frame on
// another connection closes only that connection.
func TestServer(t *testing.T) {
	v, cfg := loadVectors(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(NewState(cfg))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		ln.Close()
		srv.Close(time.Second)
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	roundTrip := func(i int) {
		t.Helper()
		req := unhex(t, v.Cases[i].Request)
		frame := binary.BigEndian.AppendUint32(nil, uint32(len(req)))
		if _, err := conn.Write(append(frame, req...)); err != nil {
			t.Fatal(err)
		}
		got, err := readFrame(r)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if hex.EncodeToString(got) != v.Cases[i].Response {
			t.Fatalf("case %d:\n got  %x\n want %s", i, got, v.Cases[i].Response)
		}
	}

	for i, m := range v.Malformed {
		roundTrip(i)
		bad, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		bad.SetDeadline(time.Now().Add(2 * time.Second))
		bad.Write(unhex(t, m.Frame))
		bad.(*net.TCPConn).CloseWrite() // the truncated frame ends here
		if n, err := bad.Read(make([]byte, 1)); n != 0 || (err != io.EOF && !isReset(err)) {
			t.Errorf("%s: read after bad frame = %d, %v; want the connection closed", m.Why, n, err)
		}
		bad.Close()
	}
	for i := len(v.Malformed); i < len(v.Cases); i++ {
		roundTrip(i)
	}
	if got := srv.requests.Load(); got != uint64(len(v.Cases)) {
		t.Errorf("requests = %d, want %d", got, len(v.Cases))
	}
	if got := srv.malformed.Load(); got != uint64(len(v.Malformed)) {
		t.Errorf("malformed = %d, want %d", got, len(v.Malformed))
	}
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

func TestParseFlags(t *testing.T) {
	bad := [][]string{
		{},
		{"--listen", "127.0.0.1:0", "--bogus"},
		{"--listen", "127.0.0.1:0", "--workers", "0"},
		{"--listen", "127.0.0.1:0", "--window", "0"},
		{"--listen", "127.0.0.1:0", "--merchants", "0"},
		{"--listen", "127.0.0.1:0", "--rules", "0"},
		{"--listen", "127.0.0.1:0", "--rules", "65536"},
		{"--listen", "127.0.0.1:0", "--accounts", "-1"},
		{"--listen", "nonsense"},
		{"--listen", "127.0.0.1:0", "extra"},
	}
	for _, args := range bad {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) succeeded", args)
		}
	}
	o, err := parseFlags([]string{"--listen", "127.0.0.1:0", "--workers", "3", "--window", "8", "--seed", "18446744073709551615"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.workers != 3 || o.Window != 8 || o.Seed != math.MaxUint64 || o.Accounts != 100000 || o.Rules != 200 || o.Merchants != 10000 {
		t.Errorf("parsed %+v", o)
	}
}

func TestSummarizePauses(t *testing.T) {
	inf := math.Inf(1)
	h := &metrics.Float64Histogram{
		Buckets: []float64{math.Inf(-1), 0, 10e-6, 20e-6, 40e-6, inf},
		Counts:  []uint64{0, 98, 1, 0, 1},
	}
	st := summarizePauses(h)
	want := pauseStats{count: 100, p50US: 10, p99US: 20, maxUS: 40, totalUS: 98*5 + 15 + 40}
	if st != want {
		t.Errorf("got %+v, want %+v", st, want)
	}
	if st := summarizePauses(&metrics.Float64Histogram{Buckets: h.Buckets, Counts: make([]uint64, 5)}); st != (pauseStats{}) {
		t.Errorf("empty histogram: got %+v", st)
	}
}

func TestCollectSummary(t *testing.T) {
	s := collectSummary(3, 1)
	line, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"lang", "requests", "malformed", "rss_hwm_bytes", "gc_cycles",
		"gc_pause_count", "gc_pause_total_us", "gc_pause_p50_us", "gc_pause_p99_us", "gc_pause_max_us",
		"heap_goal_bytes", "gomaxprocs", "go_version"} {
		if _, ok := m[k]; !ok {
			t.Errorf("summary %s lacks %q", line, k)
		}
	}
	if !bytes.HasPrefix(line, []byte(`{"lang":"go","requests":3,"malformed":1,"rss_hwm_bytes":`)) {
		t.Errorf("summary %s", line)
	}
}

// TestTimestampsNearMax checks that "e.ts + 60000 > t.ts" is evaluated on exact
// integers, as in reference.py, and not with wrap-around at 2^64.
func TestTimestampsNearMax(t *testing.T) {
	s := NewState(Config{Window: 8, Merchants: 1, Rules: 9})
	var d Decision
	for i := range uint64(4) {
		d = s.Decide(txn{requestID: i, account: 1, merchant: 1, amount: 100, country: [2]byte{'U', 'S'}, ts: math.MaxUint64})
	}
	// The window holds 3 entries at the same instant: velocity_1m = 3 > 2 fires
	// rule 0 and recency = 60 > 30 fires rule 8 (reference.py agrees). With
	// wrap-around, velocity_1m would be 0.
	if want := []uint16{0, 8}; !slices.Equal(d.Fired, want) {
		t.Errorf("fired %v, want %v", d.Fired, want)
	}
}

// BenchmarkHandle measures one decision on the default pre-load, allocations
// included (go test -bench Handle -benchmem).
func BenchmarkHandle(b *testing.B) {
	s := NewState(Config{Accounts: 100000, Window: 32, Merchants: 10000, Rules: 200, Seed: 42})
	payload := make([]byte, txnSize)
	payload[0] = typeTxn
	copy(payload[29:31], "US")
	rng := splitmix64{state: 1}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := rng.next()
		binary.BigEndian.PutUint64(payload[9:17], r%100000)        // account
		binary.BigEndian.PutUint32(payload[17:21], uint32(r%9973)) // merchant
		binary.BigEndian.PutUint64(payload[21:29], 100+r%200000)   // amount
		binary.BigEndian.PutUint64(payload[39:47], 32000+uint64(i))
		if _, err := s.Handle(payload); err != nil {
			b.Fatal(err)
		}
	}
}
