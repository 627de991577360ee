package rawio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

// pair returns a wrapped client connection and the server end of a real loopback TCP connection.
func pair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	w := Wrap(c)
	t.Cleanup(func() { w.Close(); peer.Close() })
	return w, peer
}

func TestWrap(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Wrap(a) != a {
		t.Error("a connection that is not TCP was wrapped")
	}
	c, _ := pair(t)
	if _, ok := c.(*Conn); !ok && runtime.GOOS == "linux" {
		t.Errorf("a TCP connection on Linux was not wrapped: %T", c)
	}
	if _, ok := c.(interface{ CloseWrite() error }); !ok {
		t.Error("the wrapped connection lost CloseWrite")
	}
}

func TestReadWrite(t *testing.T) {
	c, peer := pair(t)

	// A read waits for data that comes later (the poller's wait, then the raw read).
	go func() {
		time.Sleep(30 * time.Millisecond)
		peer.Write([]byte("hello"))
	}()
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Errorf("an empty read: %d, %v", n, err)
	}
	if n, err := c.Write(nil); n != 0 || err != nil {
		t.Errorf("an empty write: %d, %v", n, err)
	}

	// A write larger than the socket buffers completes while the peer reads slowly: the
	// writer waits for room on the poller and goes on where it stopped.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	got := make(chan []byte, 1)
	go func() {
		var out bytes.Buffer
		chunk := make([]byte, 64<<10)
		for out.Len() < len(big) {
			n, err := peer.Read(chunk)
			out.Write(chunk[:n])
			if err != nil {
				break
			}
			if out.Len() < 1<<20 {
				time.Sleep(time.Millisecond)
			}
		}
		got <- out.Bytes()
	}()
	if n, err := c.Write(big); n != len(big) || err != nil {
		t.Fatalf("wrote %d of %d: %v", n, len(big), err)
	}
	if b := <-got; !bytes.Equal(b, big) {
		t.Fatalf("the peer read %d bytes, not the %d written", len(b), len(big))
	}

	// The same the other way, concurrently with a write (one reader and one writer at a time).
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		peer.Write(big)
	}()
	go c.Write([]byte("ping"))
	read, err := io.ReadFull(c, make([]byte, len(big)))
	wg.Wait()
	if err != nil || read != len(big) {
		t.Fatalf("read %d of %d: %v", read, len(big), err)
	}
	ping := make([]byte, 4)
	if _, err := io.ReadFull(peer, ping); err != nil || string(ping) != "ping" {
		t.Fatalf("the peer read %q, %v", ping, err)
	}

	// The peer closing gives io.EOF.
	peer.Close()
	if _, err := io.ReadAll(c); err != nil {
		t.Errorf("reading to the peer's close: %v", err)
	}
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("after the peer closed: %d, %v; want io.EOF", n, err)
	}
}

// TestErrors: failures look as they do from a plain TCP connection, so the callers' checks for
// timeouts and closed connections keep working.
func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(c, peer net.Conn)
		check func(err error) bool
	}{
		{"read deadline", func(c, _ net.Conn) { c.SetReadDeadline(time.Now().Add(20 * time.Millisecond)) },
			func(err error) bool {
				var ne net.Error
				return errors.Is(err, os.ErrDeadlineExceeded) && errors.As(err, &ne) && ne.Timeout()
			}},
		{"closed while reading", func(c, _ net.Conn) { time.AfterFunc(20*time.Millisecond, func() { c.Close() }) },
			func(err error) bool { return errors.Is(err, net.ErrClosed) }},
		{"reset by the peer", func(_, peer net.Conn) {
			peer.(*net.TCPConn).SetLinger(0)
			peer.Close()
		}, func(err error) bool { return err != nil && err != io.EOF }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, peer := pair(t)
			tc.setup(c, peer)
			start := time.Now()
			_, err := c.Read(make([]byte, 8))
			var oe *net.OpError
			if !tc.check(err) || !errors.As(err, &oe) || oe.Op != "read" {
				t.Errorf("read: %#v", err)
			}
			if time.Since(start) > 5*time.Second {
				t.Errorf("the read returned after %v", time.Since(start))
			}
		})
	}

	t.Run("write to a reset connection", func(t *testing.T) {
		c, peer := pair(t)
		peer.(*net.TCPConn).SetLinger(0)
		peer.Close()
		time.Sleep(20 * time.Millisecond)
		var err error
		for i := 0; i < 100 && err == nil; i++ { // the first write may be accepted before the reset is seen
			_, err = c.Write(make([]byte, 1024))
		}
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "write" {
			t.Errorf("write: %#v", err)
		}
	})
	t.Run("write deadline", func(t *testing.T) {
		c, _ := pair(t)
		c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		big := make([]byte, 64<<20) // more than the socket buffers hold: the peer never reads
		n, err := c.Write(big)
		if !errors.Is(err, os.ErrDeadlineExceeded) || n == 0 || n == len(big) {
			t.Errorf("wrote %d of %d: %v", n, len(big), err)
		}
	})
}
