package balance

import (
	"hash/fnv"
	"math"
	"net/netip"
	"slices"
	"sync"
)

// Algorithm is how a server is picked; the words are config's balance.
type Algorithm string

const (
	LeastConn  Algorithm = "least_conn"
	RoundRobin Algorithm = "round_robin"
	HashClient Algorithm = "hash_client"
)

// Candidate is one server as the balancer sees it at one pick.
type Candidate struct {
	Key    string  // the server's address: what hash_client hashes with the client
	Weight float64 // effective weight (Health.Weight): > 0
	Active int64   // sessions using it now
	Up     bool
}

// Balancer picks servers for one backend. Its methods are safe for
// concurrent use.
type Balancer struct {
	alg Algorithm

	mu      sync.Mutex
	current []float64 // round_robin: each server's running score
	next    int       // least_conn: where ties start, moved on every pick
}

// New returns a balancer for alg; an unknown alg is least_conn.
func New(alg Algorithm) *Balancer {
	return &Balancer{alg: alg}
}

// Order returns the indexes of cands in the order a session tries them: the
// pick first, then the other up servers by the same rule. When no server is
// up it returns every server, by the same rule.
func (b *Balancer) Order(cands []Candidate, client netip.Addr) []int {
	idx := make([]int, 0, len(cands))
	for i, c := range cands {
		if c.Up {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		for i := range cands {
			idx = append(idx, i)
		}
	}
	switch b.alg {
	case RoundRobin:
		return b.roundRobin(cands, idx)
	case HashClient:
		return hashOrder(cands, idx, client)
	}
	return b.leastConn(cands, idx)
}

// leastConn sorts by sessions per unit of weight; equal loads keep a
// rotating order, so that ties spread.
func (b *Balancer) leastConn(cands []Candidate, idx []int) []int {
	b.mu.Lock()
	start := b.next
	b.next++
	b.mu.Unlock()
	n := len(cands)
	rank := func(i int) int { return ((i-start)%n + n) % n }
	slices.SortFunc(idx, func(i, j int) int {
		li, lj := load(cands[i]), load(cands[j])
		switch {
		case li < lj:
			return -1
		case li > lj:
			return 1
		}
		return rank(i) - rank(j)
	})
	return idx
}

// load is the sessions per unit of weight a server would have with the new
// one: counting it makes a light weight count even when nothing is active,
// so that a server being eased in is not picked on a tie at zero.
func load(c Candidate) float64 {
	return float64(c.Active+1) / max(c.Weight, 1e-9)
}

// roundRobin is nginx's smooth weighted round-robin: every candidate's
// score grows by its weight, the highest is picked and falls back by the
// sum of the weights. The others follow in configuration order after the
// pick.
func (b *Balancer) roundRobin(cands []Candidate, idx []int) []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.current) != len(cands) {
		b.current = make([]float64, len(cands))
	}
	best, total := -1, 0.0
	for _, i := range idx {
		b.current[i] += cands[i].Weight
		total += cands[i].Weight
		if best < 0 || b.current[i] > b.current[best] {
			best = i
		}
	}
	b.current[best] -= total
	n := len(cands)
	slices.SortFunc(idx, func(i, j int) int { return (i-best+n)%n - (j-best+n)%n })
	return idx
}

// hashOrder sorts by rendezvous score, highest first.
func hashOrder(cands []Candidate, idx []int, client netip.Addr) []int {
	key, _ := client.Unmap().MarshalBinary()
	score := make([]float64, len(cands))
	for _, i := range idx {
		score[i] = Score(key, cands[i].Key, cands[i].Weight)
	}
	slices.SortStableFunc(idx, func(i, j int) int {
		switch {
		case score[i] > score[j]:
			return -1
		case score[i] < score[j]:
			return 1
		}
		return 0
	})
	return idx
}

// Score is the weighted rendezvous score of server for client:
// weight / -ln(u), u uniform in (0,1) from a hash of both.
func Score(client []byte, server string, weight float64) float64 {
	h := fnv.New64a()
	_, _ = h.Write(client)
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(server))
	x := mix(h.Sum64())
	u := (float64(x>>11) + 0.5) / (1 << 53) // in (0,1)
	return weight / -math.Log(u)
}

// mix is splitmix64's finalizer: FNV alone leaves related keys' high bits
// alike.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
