package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// procMem reads VmRSS and VmHWM (in KiB) from /proc/PID/status.
func procMem(pid int) (rssKiB, hwmKiB int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		key, val, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		fields := strings.Fields(val) // e.g. "12345 kB"
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parsing %s: %w", key, err)
		}
		if key == "VmRSS" {
			rssKiB = n
		} else {
			hwmKiB = n
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if rssKiB == 0 {
		return 0, 0, fmt.Errorf("pid %d: no VmRSS (kernel thread or exited?)", pid)
	}
	return rssKiB, hwmKiB, nil
}

// memSampler samples the RSS of a process every interval. It keeps the
// overall peak and a resettable "window" peak used per scenario.
type memSampler struct {
	pid  int
	stop chan struct{}
	done chan struct{}

	mu        sync.Mutex
	peakKiB   int64
	windowKiB int64
	lastKiB   int64
	hwmKiB    int64
	errs      int
}

func startMemSampler(pid int, interval time.Duration) *memSampler {
	m := &memSampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	m.sample()
	go func() {
		defer close(m.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				m.sample()
				return
			case <-t.C:
				m.sample()
			}
		}
	}()
	return m
}

func (m *memSampler) sample() {
	rss, hwm, err := procMem(m.pid)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.errs++
		return
	}
	m.lastKiB, m.hwmKiB = rss, hwm
	m.peakKiB = max(m.peakKiB, rss)
	m.windowKiB = max(m.windowKiB, rss)
}

// resetWindow starts a new window and returns the peak of the previous one.
func (m *memSampler) resetWindow() int64 {
	m.sample()
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.windowKiB
	m.windowKiB = m.lastKiB
	return w
}

// snapshot returns the latest sampled RSS, the peak so far, the last
// VmHWM and the number of failed samples.
func (m *memSampler) snapshot() (lastKiB, peakKiB, hwmKiB int64, errs int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastKiB, m.peakKiB, m.hwmKiB, m.errs
}

// finish stops sampling and returns the peak sampled RSS, the last RSS,
// the kernel's high-water mark (VmHWM, which includes start-up) and the
// number of failed samples.
func (m *memSampler) finish() (peakKiB, lastKiB, hwmKiB int64, errs int) {
	close(m.stop)
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peakKiB, m.lastKiB, m.hwmKiB, m.errs
}

func mib(kib int64) float64 { return float64(kib) / 1024 }

// procCPUTicks returns utime+stime of a process in clock ticks, from
// /proc/PID/stat (fields 14 and 15).
func procCPUTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may contain spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return utime + stime, nil
}

// waitIdle waits until the process used less than 10% of one core over a
// 500 ms window (assuming the usual 100 clock ticks per second), or until
// maxWait has passed. It returns how long it waited.
func waitIdle(pid int, maxWait time.Duration) time.Duration {
	const window = 500 * time.Millisecond
	const idleTicks = 5 // 10% of 50 ticks
	start := time.Now()
	prev, err := procCPUTicks(pid)
	for err == nil && time.Since(start) < maxWait {
		time.Sleep(window)
		var cur int64
		if cur, err = procCPUTicks(pid); err == nil {
			if cur-prev < idleTicks {
				break
			}
			prev = cur
		}
	}
	return time.Since(start)
}
