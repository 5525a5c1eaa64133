package kubelet

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
)

// ipPool hands out pod IPs from a loopback prefix, unique among the pods of
// one Kubelet.
type ipPool struct {
	prefix netip.Prefix
	size   uint32

	mu     sync.Mutex
	used   map[netip.Addr]string // IP -> pod key
	cursor uint32
}

func newIPPool(cidr string) (*ipPool, error) {
	prefix, err := netip.ParsePrefix(cidr)
	if err != nil {
		return nil, err
	}
	prefix = prefix.Masked()
	loopback := netip.MustParsePrefix("127.0.0.0/8")
	if !prefix.Addr().Is4() || !loopback.Overlaps(prefix) || prefix.Bits() < loopback.Bits() {
		// Pods get real processes listening on these IPs, and tests dial
		// them: only loopback addresses are allowed.
		return nil, fmt.Errorf("kubelet: IP range %s is not inside 127.0.0.0/8", cidr)
	}
	if prefix.Bits() > 30 {
		return nil, fmt.Errorf("kubelet: IP range %s is too small", cidr)
	}
	size := uint32(1) << (32 - prefix.Bits())
	// A random start: several Kubelets on one machine (tests of different
	// packages run in parallel) with the same default range rarely collide,
	// and the listen check in allocate catches the rest.
	return &ipPool{prefix: prefix, size: size, used: map[netip.Addr]string{}, cursor: rand.Uint32N(size-2) + 1}, nil
}

// addr returns the i-th address of the prefix.
func (p *ipPool) addr(i uint32) netip.Addr {
	b := p.prefix.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += i
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// allocate returns a free IP for key, skipping the network and broadcast
// addresses and any IP where one of ports is already taken by some other
// process on this machine.
func (p *ipPool) allocate(key string, ports []int) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range p.size {
		i := p.cursor
		p.cursor++
		if p.cursor >= p.size-1 {
			p.cursor = 1
		}
		if i == 0 || i >= p.size-1 {
			continue
		}
		ip := p.addr(i)
		if _, taken := p.used[ip]; taken || !portsFree(ip, ports) {
			continue
		}
		p.used[ip] = key
		return ip.String(), nil
	}
	return "", fmt.Errorf("kubelet: no free IP in %s", p.prefix)
}

// reserve claims ip for key if it is in the range and free: a pod keeps the
// IP it was given, also across a restart of the test's Kubelet.
func (p *ipPool) reserve(ip, key string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil || !p.prefix.Contains(a) {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if owner, taken := p.used[a]; taken && owner != key {
		return false
	}
	p.used[a] = key
	return true
}

func (p *ipPool) release(ip string) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.used, a)
}

// portsFree reports whether every port can be bound on ip right now.
func portsFree(ip netip.Addr, ports []int) bool {
	for _, port := range ports {
		l, err := net.Listen("tcp", net.JoinHostPort(ip.String(), strconv.Itoa(port)))
		if err != nil {
			return false
		}
		l.Close()
	}
	return true
}
