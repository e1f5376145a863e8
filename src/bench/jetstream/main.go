// jetstream-bench: the NATS JetStream peer of driftd-bench's ingest scenario,
// run by scripts/bench.sh (scenario `jetstream`) on the same machine, with
// the same publishers, window and value size, so that driftd's figure can be
// set next to JetStream's (docs/benchmarks.md, "driftd and NATS JetStream
// side by side").
//
// What it does, and why it matches driftd-bench ingest:
//   - one NATS connection per publisher, round-robin over --servers (as
//     driftd-bench spreads its publishers over the nodes' URLs);
//   - each publisher its own subject PREFIX.I, as each driftd publisher has
//     its own room; one stream (--replicas, --storage) covers them all, so,
//     as in driftd where every room goes through the one raft log, every
//     publish goes through the one stream's raft group and its leader;
//   - PublishAsync with at most --window publishes unacknowledged per
//     publisher (our own bound: the library's PublishAsyncMaxPending fails a
//     publish after 200 ms of stall instead of waiting, so it is set above
//     the window and never reached);
//   - acknowledged publishes counted in the measured window (after
//     --warmup), publish->ack latency of the acks received in it;
//   - a failed ack (an error reply, or none within --ack-timeout) is an
//     error, and any error fails the run (exit 1), as a refused push fails
//     driftd-bench's check.
//
// The JSON (--json) uses driftd-bench's field names where the figure is the
// same (pushes.acked_per_s, ack_latency_ms.p50/p99/p999, cpu.nodes_pct,
// ...), so `driftd-bench report` reads it like a driftd result.
//
// Built offline in GOPATH mode against Debian's golang-github-nats-io-go-nats-dev
// (nats.go 1.22.1, /usr/share/gocode): no module download. See scripts/bench.sh.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
)

type options struct {
	servers      []string
	pids         []int
	publishers   int
	window       int
	valueSize    int
	duration     float64
	warmup       float64
	stream       string
	prefix       string
	replicas     int
	storage      string
	setupTimeout float64
	ackTimeout   float64
	label        string
	jsonPath     string
}

// Counters shared by every publisher; the measured window's figures are the
// difference between two snapshots, as in driftd-bench.
type counters struct {
	sent, acked, errors atomic.Int64
	notSent             atomic.Int64 // errors of PublishAsync itself
}

type snapshot struct{ sent, acked, errors int64 }

func (c *counters) snap() snapshot {
	return snapshot{c.sent.Load(), c.acked.Load(), c.errors.Load()}
}

type run struct {
	o         *options
	c         counters
	measuring atomic.Bool
	failMu    sync.Mutex
	failure   string
}

func (r *run) fail(format string, args ...interface{}) {
	r.failMu.Lock()
	if r.failure == "" {
		r.failure = fmt.Sprintf(format, args...)
	}
	r.failMu.Unlock()
}

type inflight struct {
	f  nats.PubAckFuture
	t0 time.Time
}

type publisher struct {
	id      int
	server  string
	nc      *nats.Conn
	js      nats.JetStreamContext
	subject string
	lat     []int64 // ns, acks received while measuring
}

// publish sends until stop is closed, never more than --window ahead of the
// acks; collect waits for each future in order and frees its slot. Acks of
// one connection from one stream leader arrive in order, so waiting in order
// adds nothing measurable.
func (r *run) publish(p *publisher, stop <-chan struct{}, wg *sync.WaitGroup) {
	slots := make(chan struct{}, r.o.window)
	pending := make(chan inflight, r.o.window)
	value := make([]byte, r.o.valueSize)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	go r.collect(p, pending, slots, wg)
	defer close(pending)
	for {
		select {
		case <-stop:
			return
		case slots <- struct{}{}:
		}
		t0 := time.Now()
		f, err := p.js.PublishAsync(p.subject, value)
		if err != nil {
			r.c.errors.Add(1)
			r.c.notSent.Add(1)
			r.fail("publisher %d (%s): publish: %v", p.id, p.server, err)
			return
		}
		r.c.sent.Add(1)
		pending <- inflight{f, t0}
	}
}

func (r *run) collect(p *publisher, pending <-chan inflight, slots <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	timeout := time.Duration(r.o.ackTimeout * float64(time.Second))
	timer := time.NewTimer(timeout)
	for it := range pending {
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		// counted from the publish, not from when its turn came: after a
		// lost server the window's unanswered publishes time out together
		timer.Reset(time.Until(it.t0.Add(timeout)))
		select {
		case <-it.f.Ok():
			lat := time.Since(it.t0)
			r.c.acked.Add(1)
			if r.measuring.Load() {
				p.lat = append(p.lat, int64(lat))
			}
		case err := <-it.f.Err():
			r.c.errors.Add(1)
			r.fail("publisher %d (%s): ack: %v", p.id, p.server, err)
		case <-timer.C:
			r.c.errors.Add(1)
			r.fail("publisher %d (%s): no ack within %.1f s", p.id, p.server, r.o.ackTimeout)
		}
		<-slots
	}
}

// ---- CPU figures, read the way driftd-bench reads them (src/bench/sys.c) ----

// utime+stime of a process from /proc/PID/stat, in seconds; USER_HZ is 100
// on every Linux ABI.
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return -1
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return (ut + st) / 100
}

func selfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return -1
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// busy and total jiffies of the machine, and its CPU count, from /proc/stat.
func machineJiffies() (busy, total uint64, cpus int, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "cpu ") {
			f := strings.Fields(line)
			if len(f) < 9 {
				return
			}
			var v [8]uint64
			for i := range v {
				v[i], _ = strconv.ParseUint(f[i+1], 10, 64)
				total += v[i]
			}
			busy = total - v[3] - v[4] // less idle and iowait
			ok = true
		} else if len(line) > 3 && strings.HasPrefix(line, "cpu") && line[3] >= '0' && line[3] <= '9' {
			cpus++
		}
	}
	return
}

// ---- output ----

type latency struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean,omitempty"`
	Min   float64 `json:"min,omitempty"`
	P50   float64 `json:"p50,omitempty"`
	P90   float64 `json:"p90,omitempty"`
	P99   float64 `json:"p99,omitempty"`
	P999  float64 `json:"p999,omitempty"`
	Max   float64 `json:"max,omitempty"`
}

func latencyOf(ns []int64) latency {
	if len(ns) == 0 {
		return latency{}
	}
	sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(ns)))) - 1
		if i < 0 {
			i = 0
		}
		return float64(ns[i]) / 1e6
	}
	var sum float64
	for _, v := range ns {
		sum += float64(v)
	}
	return latency{
		Count: int64(len(ns)), Mean: sum / float64(len(ns)) / 1e6,
		Min: float64(ns[0]) / 1e6, P50: q(0.5), P90: q(0.9), P99: q(0.99),
		P999: q(0.999), Max: float64(ns[len(ns)-1]) / 1e6,
	}
}

type node struct {
	URL    string  `json:"url"`
	PID    int     `json:"pid"`
	CPUS   float64 `json:"cpu_s"`
	CPUPct float64 `json:"cpu_pct"`
}

func main() {
	os.Exit(mainRC())
}

func usage(err error) int {
	fmt.Fprintf(os.Stderr, "jetstream-bench: %v (--help)\n", err)
	return 2
}

func mainRC() int {
	o := &options{}
	var servers, pids string
	flag.StringVar(&servers, "servers", "nats://127.0.0.1:4222", "NATS server URLs, comma-separated; publishers round-robin over them")
	flag.StringVar(&pids, "pids", "", "server PIDs, comma-separated, for their CPU time (from /proc)")
	flag.IntVar(&o.publishers, "publishers", 16, "publishers, one connection and one subject each")
	flag.IntVar(&o.window, "window", 64, "unacknowledged publishes per publisher, at most")
	flag.IntVar(&o.valueSize, "value-size", 64, "payload bytes per publish")
	flag.Float64Var(&o.duration, "duration", 10, "measured seconds")
	flag.Float64Var(&o.warmup, "warmup", 2, "seconds of publishing before measuring")
	flag.StringVar(&o.stream, "stream", "BENCH", "stream name (created if missing)")
	flag.StringVar(&o.prefix, "subject-prefix", "bench", "publisher I publishes to PREFIX.I; the stream covers PREFIX.*")
	flag.IntVar(&o.replicas, "replicas", 3, "stream replicas")
	flag.StringVar(&o.storage, "storage", "file", "stream storage: file or memory")
	flag.Float64Var(&o.setupTimeout, "setup-timeout", 30, "seconds to wait for the cluster to take the stream")
	flag.Float64Var(&o.ackTimeout, "ack-timeout", 10, "seconds before an unanswered publish counts as an error")
	flag.StringVar(&o.label, "label", "jetstream", "label of the result (driftd-bench report groups by it)")
	flag.StringVar(&o.jsonPath, "json", "", "write the JSON result to this file (- for stdout)")
	flag.Parse()
	if flag.NArg() > 0 {
		return usage(fmt.Errorf("unexpected argument %q", flag.Arg(0)))
	}
	for _, s := range strings.Split(servers, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.servers = append(o.servers, s)
		}
	}
	for _, s := range strings.Split(pids, ",") {
		if s = strings.TrimSpace(s); s != "" {
			pid, err := strconv.Atoi(s)
			if err != nil || pid <= 0 {
				return usage(fmt.Errorf("bad pid %q", s))
			}
			o.pids = append(o.pids, pid)
		}
	}
	var storage nats.StorageType
	switch o.storage {
	case "file":
		storage = nats.FileStorage
	case "memory":
		storage = nats.MemoryStorage
	default:
		return usage(fmt.Errorf("bad --storage %q", o.storage))
	}
	if len(o.servers) == 0 || o.publishers < 1 || o.window < 1 || o.valueSize < 1 ||
		o.duration <= 0 || o.warmup < 0 || o.replicas < 1 {
		return usage(errors.New("bad option value"))
	}

	r := &run{o: o}
	pubs := make([]*publisher, o.publishers)
	tConnect := time.Now()
	for i := range pubs {
		p := &publisher{id: i, server: o.servers[i%len(o.servers)], subject: fmt.Sprintf("%s.%d", o.prefix, i)}
		var err error
		// No reconnect: a server lost mid-run must show as errors, not be
		// papered over.
		p.nc, err = nats.Connect(p.server, nats.Name(fmt.Sprintf("jetstream-bench-%d", i)), nats.NoReconnect())
		if err != nil {
			fmt.Fprintf(os.Stderr, "jetstream-bench: connect %s: %v\n", p.server, err)
			return 2
		}
		defer p.nc.Close()
		p.js, err = p.nc.JetStream(nats.PublishAsyncMaxPending(o.window + 1))
		if err != nil {
			fmt.Fprintf(os.Stderr, "jetstream-bench: %v\n", err)
			return 2
		}
		pubs[i] = p
	}
	connectS := time.Since(tConnect).Seconds()

	// The stream, retried until the cluster has a meta leader and places
	// it; then until its own leader and every replica are current.
	cfg := &nats.StreamConfig{Name: o.stream, Subjects: []string{o.prefix + ".*"},
		Replicas: o.replicas, Storage: storage}
	deadline := time.Now().Add(time.Duration(o.setupTimeout * float64(time.Second)))
	for {
		_, err := pubs[0].js.AddStream(cfg, nats.MaxWait(2*time.Second))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "jetstream-bench: creating stream %s: %v\n", o.stream, err)
			return 2
		}
		time.Sleep(250 * time.Millisecond)
	}
	for {
		si, err := pubs[0].js.StreamInfo(o.stream, nats.MaxWait(2*time.Second))
		if err == nil && si.Cluster != nil && si.Cluster.Leader != "" && len(si.Cluster.Replicas) == o.replicas-1 {
			current := true
			for _, p := range si.Cluster.Replicas {
				current = current && p.Current
			}
			if current {
				fmt.Fprintf(os.Stderr, "jetstream-bench: stream %s (%s, R%d) led by %s\n",
					o.stream, o.storage, o.replicas, si.Cluster.Leader)
				break
			}
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "jetstream-bench: stream %s has no leader with current replicas after %.0f s (%v)\n",
				o.stream, o.setupTimeout, err)
			return 2
		}
		time.Sleep(100 * time.Millisecond)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(len(pubs))
	for _, p := range pubs {
		go r.publish(p, stop, &wg)
	}
	time.Sleep(time.Duration(o.warmup * float64(time.Second)))

	// measured window
	c0 := r.c.snap()
	self0 := selfCPU()
	busy0, total0, ncpu, haveJiffies := machineJiffies()
	node0 := make([]float64, len(o.pids))
	for i, pid := range o.pids {
		node0[i] = procCPU(pid)
	}
	t0 := time.Now()
	r.measuring.Store(true)
	time.Sleep(time.Duration(o.duration * float64(time.Second)))
	r.measuring.Store(false)
	measured := time.Since(t0).Seconds()
	c1 := r.c.snap()
	self1 := selfCPU()
	busy1, total1, _, haveJiffies1 := machineJiffies()
	nodes := make([]node, len(o.pids))
	nodesCPU := 0.0
	for i, pid := range o.pids {
		c := procCPU(pid)
		url := ""
		if i < len(o.servers) {
			url = o.servers[i]
		}
		nodes[i] = node{URL: url, PID: pid, CPUS: -1, CPUPct: -1}
		if c >= 0 && node0[i] >= 0 {
			nodes[i].CPUS = c - node0[i]
			nodes[i].CPUPct = 100 * nodes[i].CPUS / measured
			nodesCPU += nodes[i].CPUS
		}
	}

	// stop publishing; every publish sent gets its ack or its error
	close(stop)
	wg.Wait()
	total := r.c.snap()

	var all []int64
	for _, p := range pubs {
		all = append(all, p.lat...)
	}
	lat := latencyOf(all)
	// acks in the window: those received while measuring, each with its
	// latency (the counters' snapshots are taken a moment apart from the
	// flag)
	win := snapshot{c1.sent - c0.sent, int64(len(all)), c1.errors - c0.errors}
	ok := total.errors == 0 && total.acked == total.sent && win.acked > 0
	if ok {
		r.failure = ""
	} else if r.failure == "" {
		r.failure = fmt.Sprintf("acked %d of %d publishes", total.acked, total.sent)
	}

	perS := func(n int64) float64 { return float64(n) / measured }
	counts := func(s snapshot) map[string]int64 {
		return map[string]int64{"sent": s.sent, "acked": s.acked, "errors": s.errors, "deliveries": 0}
	}
	cpu := map[string]interface{}{"bench_s": self1 - self0, "bench_pct": 100 * (self1 - self0) / measured}
	if haveJiffies && haveJiffies1 && total1 > total0 {
		cpu["machine_busy_pct"] = 100 * float64(busy1-busy0) / float64(total1-total0)
		cpu["machine_cpus"] = ncpu
	}
	if len(o.pids) > 0 {
		cpu["nodes_s"] = nodesCPU
		cpu["nodes_pct"] = 100 * nodesCPU / measured
	}
	result := map[string]interface{}{
		"label":    o.label,
		"scenario": "jetstream",
		"format":   "nats",
		"ok":       ok,
		"failure":  r.failure,
		"params": map[string]interface{}{
			"urls": o.servers, "rooms": o.publishers, "publishers": o.publishers,
			"subscribers": 0, "window": o.window, "rate": 0.0, "value_size": o.valueSize,
			"action": "publish", "distinct_keys": true, "duration_s": o.duration,
			"warmup_s": o.warmup, "stream": o.stream, "subjects": o.prefix + ".*",
			"replicas": o.replicas, "storage": o.storage,
		},
		"measured_s": measured,
		"connections": map[string]interface{}{
			"target": o.publishers, "ready": len(pubs), "connect_s": connectS,
			"connect_rate": float64(len(pubs)) / connectS,
		},
		"pushes": map[string]interface{}{
			"sent": win.sent, "acked": win.acked, "errors": win.errors,
			"sent_per_s": perS(win.sent), "acked_per_s": perS(win.acked),
		},
		"deliveries":     map[string]interface{}{"count": 0, "per_s": 0.0},
		"ack_latency_ms": lat,
		"window":         counts(win),
		"totals":         counts(total),
		"check": map[string]interface{}{
			"ok": ok, "errors": total.errors,
			"unacked": total.sent - total.acked - (total.errors - r.c.notSent.Load()),
		},
		"cpu":   cpu,
		"nodes": nodes,
	}

	fmt.Fprintf(os.Stderr, "jetstream-bench %s: %d publishers over %d server(s), window %d, %d B: "+
		"acked %d (%.0f/s) in %.1f s, ack p50 %.3f p99 %.3f p99.9 %.3f ms, errors %d%s\n",
		o.label, o.publishers, len(o.servers), o.window, o.valueSize, win.acked, perS(win.acked),
		measured, lat.P50, lat.P99, lat.P999, total.errors, map[bool]string{true: "", false: ": FAILED: " + r.failure}[ok])

	if o.jsonPath != "" {
		b, err := json.MarshalIndent(result, "", "  ")
		if err != nil {
			fmt.Fprintf(os.Stderr, "jetstream-bench: %v\n", err)
			return 2
		}
		b = append(b, '\n')
		if o.jsonPath == "-" {
			_, err = os.Stdout.Write(b)
		} else {
			err = os.WriteFile(o.jsonPath, b, 0o644)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "jetstream-bench: %s: %v\n", o.jsonPath, err)
			return 2
		}
	}
	if !ok {
		return 1
	}
	return 0
}
