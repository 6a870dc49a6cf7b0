// Command repeater-load measures a Matrix homeserver over the Client-Server
// API: registrations/s, messages/s, send→/sync delivery latency, initial
// /sync time, full backward pagination of a large room, /search latency,
// and (with --pid) the server's resident memory. It only talks to loopback addresses, every
// loop is bounded in count, and the whole run is bounded by --max-duration.
//
//	repeater-load --url http://127.0.0.1:8108 [--pid PID] [--json out.json]
//	repeater-load ready --url http://127.0.0.1:8108 --timeout 10s
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// allScenarios lists the scenarios in the order they run.
var allScenarios = []string{"register", "messages", "latency", "sync", "history", "search", "media"}

type config struct {
	url             string
	scenarios       []string
	users           int
	concurrency     int
	sharedSecret    string
	messages        int
	senders         int
	receivers       int
	latencyMessages int
	latencyInterval time.Duration
	syncRooms       int
	syncRoomMsgs    int
	syncRuns        int
	history         int
	fillSenders     int
	pageLimit       int
	searchMessages  int
	searchQueries   int
	mediaFiles      int
	mediaSize       int
	mediaImages     int
	recheckAfter    time.Duration
	settle          time.Duration
	pid             int
	jsonPath        string
	maxDuration     time.Duration
}

// result is one measured figure.
type result struct {
	Scenario string  `json:"scenario"`
	Metric   string  `json:"metric"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
}

// report is what --json writes.
type report struct {
	URL       string            `json:"url"`
	Started   time.Time         `json:"started"`
	Duration  float64           `json:"duration_s"`
	Host      map[string]string `json:"host"`
	Options   map[string]any    `json:"options"`
	Results   []result          `json:"results"`
	Errors    []string          `json:"errors,omitempty"`
	Scenarios []string          `json:"scenarios"`
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "ready" {
		os.Exit(readyMain(os.Args[2:]))
	}
	os.Exit(loadMain(os.Args[1:]))
}

func loadMain(args []string) int {
	var cfg config
	var scen string
	fs := flag.NewFlagSet("repeater-load", flag.ExitOnError)
	fs.StringVar(&cfg.url, "url", "http://127.0.0.1:8008", "client API base URL (loopback only)")
	fs.StringVar(&scen, "scenarios", strings.Join(allScenarios, ","), "comma-separated scenarios to run: "+strings.Join(allScenarios, ","))
	fs.IntVar(&cfg.users, "users", 100, "register: number of users to register")
	fs.IntVar(&cfg.concurrency, "concurrency", 8, "register: concurrent registrations")
	fs.StringVar(&cfg.sharedSecret, "shared-secret", "", "register via Synapse-style /_synapse/admin/v1/register with this shared secret")
	fs.IntVar(&cfg.messages, "messages", 2000, "messages: total messages to send")
	fs.IntVar(&cfg.senders, "senders", 10, "messages: concurrent senders in the room")
	fs.IntVar(&cfg.receivers, "receivers", 20, "latency: long-polling /sync receivers")
	fs.IntVar(&cfg.latencyMessages, "latency-messages", 200, "latency: messages sent one at a time")
	fs.DurationVar(&cfg.latencyInterval, "latency-interval", 20*time.Millisecond, "latency: spacing between send starts")
	fs.IntVar(&cfg.syncRooms, "sync-rooms", 5, "sync: rooms the syncing user is in")
	fs.IntVar(&cfg.syncRoomMsgs, "sync-room-messages", 30, "sync: messages sent into each of those rooms")
	fs.IntVar(&cfg.syncRuns, "sync-runs", 50, "sync: number of initial /sync runs")
	fs.IntVar(&cfg.history, "history", 10000, "history: events to fill the room with")
	fs.IntVar(&cfg.fillSenders, "fill-senders", 10, "history: concurrent senders filling the room")
	fs.IntVar(&cfg.pageLimit, "page-limit", 1000, "history: limit per /messages page")
	fs.IntVar(&cfg.searchMessages, "search-messages", 2000, "search: messages to fill the searched room with")
	fs.IntVar(&cfg.searchQueries, "search-queries", 200, "search: /search requests, one at a time")
	fs.IntVar(&cfg.mediaFiles, "media-files", 200, "media: files uploaded and downloaded (with --concurrency workers)")
	fs.IntVar(&cfg.mediaSize, "media-size", 100<<10, "media: bytes per file")
	fs.IntVar(&cfg.mediaImages, "media-images", 10, "media: 2048x1536 JPEGs thumbnailed")
	fs.DurationVar(&cfg.recheckAfter, "recheck-after", 10*time.Second, "history: if the check fails, wait this long and page again (0: don't)")
	fs.DurationVar(&cfg.settle, "settle", 30*time.Second, "before each scenario and before paging, wait at most this long for the server to be idle (<10% CPU, needs --pid; without it: sleep 2 s)")
	fs.IntVar(&cfg.pid, "pid", 0, "server PID: sample /proc/PID/status every 100 ms for RSS")
	fs.StringVar(&cfg.jsonPath, "json", "", "also write the results as JSON to this file")
	fs.DurationVar(&cfg.maxDuration, "max-duration", 20*time.Minute, "abort the whole run after this long")
	fs.Parse(args)

	if err := checkLoopback(cfg.url); err != nil {
		fmt.Fprintln(os.Stderr, "repeater-load:", err)
		return 2
	}
	for _, s := range strings.Split(scen, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !contains(allScenarios, s) {
			fmt.Fprintf(os.Stderr, "repeater-load: unknown scenario %q (want %s)\n", s, strings.Join(allScenarios, ","))
			return 2
		}
		cfg.scenarios = append(cfg.scenarios, s)
	}
	if cfg.concurrency < 1 || cfg.senders < 1 || cfg.receivers < 1 || cfg.fillSenders < 1 || cfg.pageLimit < 1 {
		fmt.Fprintln(os.Stderr, "repeater-load: concurrency, senders, receivers, fill-senders and page-limit must be >= 1")
		return 2
	}

	ctx, cancel := context.WithTimeout(context.Background(), cfg.maxDuration)
	defer cancel()

	r := newRunner(cfg)
	rep := report{URL: cfg.url, Started: time.Now().UTC(), Scenarios: cfg.scenarios, Host: hostInfo(), Options: cfg.options()}
	fmt.Printf("repeater-load: %s, scenarios %s, run prefix %s\n", cfg.url, strings.Join(cfg.scenarios, ","), r.prefix)

	var mem *memSampler
	if cfg.pid > 0 {
		if _, _, err := procMem(cfg.pid); err != nil {
			fmt.Fprintln(os.Stderr, "repeater-load: --pid:", err)
			return 2
		}
		mem = startMemSampler(cfg.pid, 100*time.Millisecond)
		idle, _, _, _ := mem.snapshot()
		r.add("memory", "idle RSS", mib(idle), "MiB")
	}

	failed := false
	for _, s := range cfg.scenarios {
		if ctx.Err() != nil {
			rep.Errors = append(rep.Errors, s+": skipped: "+ctx.Err().Error())
			failed = true
			continue
		}
		fmt.Printf("== %s\n", s)
		r.settle(s, "for idle server before scenario")
		if mem != nil {
			mem.resetWindow()
		}
		t0 := time.Now()
		err := r.run(ctx, s)
		if mem != nil {
			r.add(s, "peak RSS during scenario", mib(mem.resetWindow()), "MiB")
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "   %s FAILED after %.1fs: %v\n", s, time.Since(t0).Seconds(), err)
			rep.Errors = append(rep.Errors, s+": "+err.Error())
			failed = true
		} else {
			fmt.Printf("   done in %.1fs\n", time.Since(t0).Seconds())
		}
	}
	if mem != nil {
		peak, last, hwm, errs := mem.finish()
		r.add("memory", "peak RSS (sampled every 100 ms)", mib(peak), "MiB")
		r.add("memory", "RSS at end", mib(last), "MiB")
		r.add("memory", "VmHWM at end (incl. start-up)", mib(hwm), "MiB")
		if errs > 0 {
			rep.Errors = append(rep.Errors, fmt.Sprintf("memory: %d failed samples of /proc/%d/status", errs, cfg.pid))
		}
	}
	rep.Duration = time.Since(rep.Started).Seconds()
	rep.Results = r.results

	fmt.Println()
	printTable(os.Stdout, r.results)
	for _, e := range rep.Errors {
		fmt.Println("ERROR:", e)
	}
	if cfg.jsonPath != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(cfg.jsonPath, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "repeater-load:", err)
			return 1
		}
	}
	if failed {
		return 1
	}
	return 0
}

func printTable(w *os.File, rs []result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tMETRIC\tVALUE\tUNIT")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Scenario, r.Metric, formatValue(r.Value), r.Unit)
	}
	tw.Flush()
}

func formatValue(v float64) string {
	switch {
	case v == float64(int64(v)) && v < 1e12 && v > -1e12:
		return fmt.Sprintf("%d", int64(v))
	case v >= 100 || v <= -100:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func (c config) options() map[string]any {
	return map[string]any{
		"users": c.users, "concurrency": c.concurrency, "shared_secret": c.sharedSecret != "",
		"messages": c.messages, "senders": c.senders,
		"receivers": c.receivers, "latency_messages": c.latencyMessages, "latency_interval_ms": ms(c.latencyInterval),
		"sync_rooms": c.syncRooms, "sync_room_messages": c.syncRoomMsgs, "sync_runs": c.syncRuns,
		"history": c.history, "fill_senders": c.fillSenders, "page_limit": c.pageLimit, "recheck_after_s": c.recheckAfter.Seconds(), "settle_s": c.settle.Seconds(), "pid": c.pid,
		"search_messages": c.searchMessages, "search_queries": c.searchQueries,
		"media_files": c.mediaFiles, "media_size": c.mediaSize, "media_images": c.mediaImages,
	}
}

func hostInfo() map[string]string {
	h := map[string]string{"nproc": fmt.Sprint(runtime.NumCPU()), "goos": runtime.GOOS, "goarch": runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				h["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		h["memtotal"] = strings.Join(strings.Fields(strings.TrimPrefix(line, "MemTotal:")), " ")
	}
	return h
}

// readyMain implements "repeater-load ready": poll GET
// /_matrix/client/versions every --interval and print the milliseconds
// from this command's start until the first 200 response.
func readyMain(args []string) int {
	start := time.Now()
	fs := flag.NewFlagSet("repeater-load ready", flag.ExitOnError)
	base := fs.String("url", "http://127.0.0.1:8008", "client API base URL (loopback only)")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	interval := fs.Duration("interval", 2*time.Millisecond, "poll interval")
	fs.Parse(args)
	if err := checkLoopback(*base); err != nil {
		fmt.Fprintln(os.Stderr, "repeater-load ready:", err)
		return 2
	}
	c := newClient(*base, 4)
	c.http.Timeout = time.Second
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(*timeout))
	defer cancel()
	attempts := 0
	for {
		attempts++
		_, err := c.do(ctx, "GET", "/_matrix/client/versions", "", nil, nil)
		if err == nil {
			fmt.Printf("ready after %.1f ms (%d attempts)\n", ms(time.Since(start)), attempts)
			return 0
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(os.Stderr, "repeater-load ready: not ready after %s (%d attempts): %v\n", *timeout, attempts, err)
			return 1
		case <-time.After(*interval):
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
