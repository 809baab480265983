package main

// The riskd state (accounts and merchants) and the decision algorithm of
// workloads/riskd/PROTOCOL.md. All arithmetic is on uint64, no floating point.

import (
	"encoding/binary"
	"errors"
	"sync"
)

const (
	typeTxn      = 0x01
	typeDecision = 0x81
	txnSize      = 47                // TXN payload size
	maxAmount    = 1_000_000_000_000 // 10^12 cents
	maxListed    = 32                // at most this many rule ids in a DECISION
	maxRules     = 65535             // rule ids and fired_total are u16 on the wire
	numFeatures  = 9
	numShards    = 64 // power of two
)

// countries used by the pre-load, in PROTOCOL.md order.
var countries = [8][2]byte{{'U', 'S'}, {'G', 'B'}, {'D', 'E'}, {'F', 'R'}, {'J', 'P'}, {'B', 'R'}, {'I', 'N'}, {'C', 'N'}}

var (
	ruleBase = [numFeatures]uint64{2, 8, 250, 0, 0, 100, 50000, 4, 30}
	ruleStep = [numFeatures]uint64{1, 2, 25, 0, 0, 20, 10000, 1, 1}
)

var errMalformed = errors.New("malformed request")

// txn is a decoded TXN request.
type txn struct {
	requestID uint64
	account   uint64
	merchant  uint32
	amount    uint64
	country   [2]byte
	device    uint64
	ts        uint64
}

// parseTxn decodes and validates a TXN payload (without the length prefix).
func parseTxn(p []byte) (txn, error) {
	if len(p) != txnSize || p[0] != typeTxn {
		return txn{}, errMalformed
	}
	t := txn{
		requestID: binary.BigEndian.Uint64(p[1:9]),
		account:   binary.BigEndian.Uint64(p[9:17]),
		merchant:  binary.BigEndian.Uint32(p[17:21]),
		amount:    binary.BigEndian.Uint64(p[21:29]),
		country:   [2]byte{p[29], p[30]},
		device:    binary.BigEndian.Uint64(p[31:39]),
		ts:        binary.BigEndian.Uint64(p[39:47]),
	}
	if t.amount < 1 || t.amount > maxAmount {
		return txn{}, errMalformed
	}
	for _, c := range t.country {
		if c < 'A' || c > 'Z' {
			return txn{}, errMalformed
		}
	}
	return t, nil
}

// entry is one transaction in an account's window (32 bytes).
type entry struct {
	ts       uint64
	amount   uint64
	device   uint64
	merchant uint32
	country  [2]byte
}

// account holds the most recent transactions of one account in a ring buffer:
// win grows by append up to the window size W; once it holds W entries, head is
// the index of the oldest one, which the next push overwrites.
type account struct {
	win  []entry
	head int
	sum  uint64 // sum of the amounts in win
}

// push records e in a window of size w, evicting the oldest entry if it is full.
func (a *account) push(e entry, w int) {
	if len(a.win) < w {
		a.win = append(a.win, e) // an account created by a request grows as needed
	} else {
		a.sum -= a.win[a.head].amount
		a.win[a.head] = e
		a.head++
		if a.head == len(a.win) {
			a.head = 0
		}
	}
	a.sum += e.amount
}

// last returns the most recent entry; the window must not be empty.
// head stays 0 until the window is full, so the newest entry is just before it.
func (a *account) last() entry {
	if a.head == 0 {
		return a.win[len(a.win)-1]
	}
	return a.win[a.head-1]
}

type merchant struct {
	count     uint64
	declined  uint64
	amountSum uint64
}

// The maps are split into shards, each behind its own mutex, so that requests
// for different accounts rarely contend. Shards are padded to a cache line.
type accountShard struct {
	mu sync.Mutex
	m  map[uint64]*account
	_  [64 - 16]byte
}

type merchantShard struct {
	mu sync.Mutex
	m  map[uint32]*merchant
	_  [64 - 16]byte
}

// shardOf spreads (often sequential) ids over the shards with a Fibonacci hash.
func shardOf(id uint64) uint64 {
	return (id * 0x9E3779B97F4A7C15) >> 58 // top 6 bits: 0 … 63
}

// Config is the part of the command line that shapes the state.
type Config struct {
	Accounts  uint64
	Window    int
	Merchants uint64
	Rules     int
	Seed      uint64
}

// State is the whole server state; it is safe for concurrent use.
type State struct {
	window     int
	thresholds []uint64 // per rule
	weights    []uint64 // per rule
	features   []uint8  // per rule: the feature it looks at
	accounts   [numShards]accountShard
	merchants  [numShards]merchantShard
}

// splitmix64 is the pre-load generator of PROTOCOL.md.
type splitmix64 struct{ state uint64 }

func (s *splitmix64) next() uint64 {
	s.state += 0x9E3779B97F4A7C15
	z := s.state
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// NewState builds the rule table and pre-loads accounts 0 … Accounts-1.
func NewState(c Config) *State {
	s := &State{
		window:     c.Window,
		thresholds: make([]uint64, c.Rules),
		weights:    make([]uint64, c.Rules),
		features:   make([]uint8, c.Rules),
	}
	for i := range c.Rules {
		f, k := i%numFeatures, uint64(i/numFeatures)
		s.features[i] = uint8(f)
		s.thresholds[i] = ruleBase[f] + k*ruleStep[f]
		s.weights[i] = uint64(5 + (i*7)%41)
	}
	perShard := int(c.Accounts/numShards) + 1
	for i := range s.accounts {
		s.accounts[i].m = make(map[uint64]*account, perShard)
		s.merchants[i].m = make(map[uint32]*merchant)
	}
	rng := splitmix64{state: c.Seed}
	for a := uint64(0); a < c.Accounts; a++ {
		acc := &account{win: make([]entry, 0, c.Window)}
		for j := range c.Window {
			r1, r2, r3 := rng.next(), rng.next(), rng.next()
			acc.push(entry{
				ts:       uint64(j) * 1000,
				amount:   100 + r1%100000,
				merchant: uint32(r2 % c.Merchants),
				country:  countries[r3%8],
				device:   a*4 + (r3>>8)%4,
			}, c.Window)
		}
		s.accounts[shardOf(a)].m[a] = acc
	}
	return s
}

// Decision is the outcome of one TXN.
type Decision struct {
	RequestID uint64
	Decision  uint8
	Score     uint16
	Fired     []uint16 // ids of all fired rules, ascending
}

// Decide evaluates t against the state and then records it, atomically with
// respect to other requests for the same account and the same merchant.
//
// Lock order is always account shard, then merchant shard, so it cannot deadlock.
func (s *State) Decide(t txn) Decision {
	var f [numFeatures]uint64

	ash := &s.accounts[shardOf(t.account)]
	ash.mu.Lock()
	defer ash.mu.Unlock()
	acc := ash.m[t.account]
	if acc == nil {
		acc = &account{} // created empty on first use
		ash.m[t.account] = acc
	}

	if n := uint64(len(acc.win)); n > 0 {
		newCountry, newDevice := uint64(1), uint64(1)
		merchants := make(map[uint32]struct{}, len(acc.win))
		for i := range acc.win {
			e := &acc.win[i]
			// e.ts + X > t.ts without wrapping around 2^64 (the reference
			// compares exact integers, and timestamps may be anything).
			if e.ts >= t.ts || t.ts-e.ts < 60_000 {
				f[0]++
			}
			if e.ts >= t.ts || t.ts-e.ts < 3_600_000 {
				f[1]++
			}
			if e.country == t.country {
				newCountry = 0
			}
			if e.device == t.device {
				newDevice = 0
			}
			merchants[e.merchant] = struct{}{}
		}
		f[2] = t.amount * 100 / max(1, acc.sum/n)
		f[3] = newCountry
		f[4] = newDevice
		f[7] = uint64(len(merchants))
		if last := acc.last().ts; t.ts >= last {
			if sec := (t.ts - last) / 1000; sec < 60 {
				f[8] = 60 - sec
			}
		} else {
			f[8] = 60
		}
	} else {
		f[2] = 100
	}
	f[6] = t.amount

	msh := &s.merchants[shardOf(uint64(t.merchant))]
	msh.mu.Lock()
	m := msh.m[t.merchant]
	if m == nil {
		m = &merchant{}
		msh.m[t.merchant] = m
	}
	f[5] = m.declined * 1000 / (m.count + 10)

	var fired []uint16
	var total uint64
	for i, th := range s.thresholds {
		if f[s.features[i]] > th {
			fired = append(fired, uint16(i))
			total += s.weights[i]
		}
	}
	score := min(1000, total)
	var decision uint8
	switch {
	case score >= 700:
		decision = 2
	case score >= 400:
		decision = 1
	}

	m.count++
	m.amountSum += t.amount
	if decision == 2 {
		m.declined++
	}
	msh.mu.Unlock()

	acc.push(entry{ts: t.ts, amount: t.amount, device: t.device, merchant: t.merchant, country: t.country}, s.window)
	return Decision{RequestID: t.requestID, Decision: decision, Score: uint16(score), Fired: fired}
}

// AppendPayload appends the DECISION payload (without length prefix) to b.
func (d Decision) AppendPayload(b []byte) []byte {
	listed := d.Fired[:min(len(d.Fired), maxListed)]
	b = append(b, typeDecision)
	b = binary.BigEndian.AppendUint64(b, d.RequestID)
	b = append(b, d.Decision)
	b = binary.BigEndian.AppendUint16(b, d.Score)
	b = binary.BigEndian.AppendUint16(b, uint16(len(d.Fired)))
	b = append(b, uint8(len(listed)))
	for _, id := range listed {
		b = binary.BigEndian.AppendUint16(b, id)
	}
	return b
}

// Handle processes one request payload and returns the response payload, or
// errMalformed (the state is then untouched).
func (s *State) Handle(payload []byte) ([]byte, error) {
	t, err := parseTxn(payload)
	if err != nil {
		return nil, err
	}
	d := s.Decide(t)
	return d.AppendPayload(make([]byte, 0, 15+2*min(len(d.Fired), maxListed))), nil
}
