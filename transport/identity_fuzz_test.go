package transport

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// helloConn is a net.Conn that reads a fixed input and records writes.
type helloConn struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (c *helloConn) Read(b []byte) (int, error)         { return c.in.Read(b) }
func (c *helloConn) Write(b []byte) (int, error)        { return c.out.Write(b) }
func (c *helloConn) Close() error                       { return nil }
func (c *helloConn) LocalAddr() net.Addr                { return &net.TCPAddr{} }
func (c *helloConn) RemoteAddr() net.Addr               { return &net.TCPAddr{} }
func (c *helloConn) SetDeadline(t time.Time) error      { return nil }
func (c *helloConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *helloConn) SetWriteDeadline(t time.Time) error { return nil }

// FuzzClusterHello: the port's side of the cluster hello reads any bytes
// without panicking, and accepts a connection only when the cluster ids
// agree or one side has none.
func FuzzClusterHello(f *testing.F) {
	f.Add("cluster-a", []byte("\x09cluster-a"))
	f.Add("cluster-a", []byte("\x09cluster-b"))
	f.Add("cluster-a", []byte("\x00"))
	f.Add("", []byte("\x09cluster-b"))
	f.Add("cluster-a", []byte("\xff"))
	f.Add("cluster-a", []byte{})
	f.Fuzz(func(t *testing.T, mine string, in []byte) {
		m := &Mux{logger: hclog.NewNullLogger()}
		m.SetClusterID(func() string { return mine })
		c := &helloConn{in: bytes.NewReader(in)}
		ok := m.acceptHello(c)
		theirs, err := readShortString(bytes.NewReader(in))
		if err != nil {
			if ok {
				t.Fatal("accepted an incomplete hello")
			}
			return
		}
		want := mine == "" || theirs == "" || mine == theirs
		if ok != want {
			t.Fatalf("mine %q theirs %q: accepted %v", mine, theirs, ok)
		}
		if ok && (c.out.Len() == 0 || c.out.Bytes()[0] != helloAccept) || !ok && c.out.Len() > 0 && c.out.Bytes()[0] != helloRefuse {
			t.Fatalf("answer % x", c.out.Bytes())
		}
	})
}
