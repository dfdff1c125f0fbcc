// Command helloflood sends one valid HELLO (made with the pre-shared key,
// as a captured one would be) to a gateway's UDP port again and again, as
// fast as one socket can, until it is killed or -for has passed: the
// attack of issue 11's "handshake cost on the data path", for
// bench/hello-flood.sh. It prints how many it sent. With -sink it is
// instead the socket a flood may be aimed at to measure what the flood
// costs the machine alone: it reads and discards.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/keys"
)

func main() {
	keyFile := flag.String("key-file", "", "pre-shared key `file`")
	gwPub := flag.String("gateway-public-key", "", "the gateway's public `key` (httpgw pubkey < its private key)")
	from := flag.String("from", "127.0.0.2:0", "source `address` of the flood")
	dur := flag.Duration("for", time.Hour, "stop after this long")
	sink := flag.String("sink", "", "read and discard on this `address` instead of flooding")
	flag.Parse()
	if *sink != "" {
		discard(*sink)
		return
	}
	if flag.NArg() != 1 || *keyFile == "" || *gwPub == "" {
		fmt.Fprintln(os.Stderr, "usage: helloflood -key-file K -gateway-public-key PUB [-from ADDR] [-for D] GATEWAY_HOST:PORT")
		os.Exit(2)
	}
	to, err := netip.ParseAddrPort(flag.Arg(0))
	if err != nil {
		log.Fatal(err)
	}
	key, err := auth.LoadKey(*keyFile)
	if err != nil {
		log.Fatal(err)
	}
	la, err := net.ResolveUDPAddr("udp", *from)
	if err != nil {
		log.Fatal(err)
	}
	c, err := net.ListenUDP("udp", la)
	if err != nil {
		log.Fatal(err)
	}
	gw, err := keys.ParsePublic(*gwPub)
	if err != nil {
		log.Fatal(err)
	}
	// A HELLO proves the pre-shared key only; the static key, which the
	// gateway checks against its allowed list, travels in AUTH.
	in, err := auth.NewInitiator(key, auth.GenerateStaticKey(), []auth.PublicKey{gw}, 0x666c6f6f64, auth.DefaultLimits)
	if err != nil {
		log.Fatal(err)
	}
	hello := in.Hello(nil)
	var sent atomic.Uint64
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		select {
		case <-stop:
		case <-time.After(*dur):
		}
		fmt.Println("sent", sent.Load())
		os.Exit(0)
	}()
	for {
		if _, err := c.WriteToUDPAddrPort(hello, to); err == nil {
			sent.Add(1)
		}
	}
}

// discard reads datagrams on addr and drops them, until killed.
func discard(addr string) {
	la, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		log.Fatal(err)
	}
	c, err := net.ListenUDP("udp", la)
	if err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 2048)
	for {
		if _, _, err := c.ReadFromUDPAddrPort(buf); err != nil {
			log.Fatal(err)
		}
	}
}
