package main

// TCP serving: one goroutine per connection, length-prefixed frames.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"log"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const maxFrame = 4096 // largest valid payload length

// Server serves the riskd protocol on a listener.
type Server struct {
	state *State

	requests  atomic.Uint64 // requests answered
	malformed atomic.Uint64 // connections dropped for a malformed or truncated frame

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closing bool
	wg      sync.WaitGroup
}

func NewServer(state *State) *Server {
	return &Server{state: state, conns: make(map[net.Conn]struct{})}
}

// Serve accepts connections until ln is closed. It returns nil after Close.
func (s *Server) Serve(ln net.Listener) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: wait and retry, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			log.Printf("riskd: accept: %v; retrying in %v", err, backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !s.track(c) {
			c.Close()
			continue
		}
		go s.serveConn(c)
	}
}

// track registers c for Close; it reports false once the server is closing.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// Close closes every open connection and waits (at most timeout) for their
// goroutines to finish. The caller closes the listener first.
func (s *Server) Close(timeout time.Duration) {
	s.mu.Lock()
	s.closing = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		log.Printf("riskd: connections still busy after %v", timeout)
	}
}

func (s *Server) serveConn(c net.Conn) {
	defer s.untrack(c)
	defer c.Close()
	r := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	var hdr [4]byte
	for {
		payload, err := readFrame(r)
		if err != nil {
			if errors.Is(err, errMalformed) || errors.Is(err, io.ErrUnexpectedEOF) {
				s.malformed.Add(1)
			}
			// Answers to earlier requests still buffered (only when a client
			// pipelines) go out; the bad frame itself gets none.
			w.Flush()
			return
		}
		resp, err := s.state.Handle(payload)
		if err != nil {
			s.malformed.Add(1)
			w.Flush()
			return
		}
		s.requests.Add(1)
		binary.BigEndian.PutUint32(hdr[:], uint32(len(resp)))
		w.Write(hdr[:])
		w.Write(resp)
		// Flush once no further request is already waiting in the buffer.
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}

// readFrame reads one length-prefixed frame. It returns io.EOF on a clean end
// of stream between frames, io.ErrUnexpectedEOF for a truncated frame, and
// errMalformed for a length of 0 or above maxFrame.
func readFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > maxFrame {
		return nil, errMalformed
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return payload, nil
}
