// v_go DEV DIR: a Go program for `record --pid --route inject`. syscall.Mmap (a raw
// system call) maps DEV; four goroutines, each locked to its own OS thread, loop:
// goroutine g writes i to its register 0x100+4g and reads it back (must be i), then
// sleeps 1 ms, until DIR/stop exists; the main goroutine allocates meanwhile (the
// garbage collector and the runtime's preemption signals run while attached). DIR/ready
// once every goroutine made its first access. Prints "iterations N errors E" and exits
// with status 4 (1 if anything was wrong).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	runtime.GOMAXPROCS(4)
	f, err := os.OpenFile(os.Args[1], os.O_RDWR, 0)
	if err != nil {
		fmt.Println(err)
		os.Exit(100)
	}
	dir := os.Args[2]
	mem, err := syscall.Mmap(int(f.Fd()), 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		fmt.Println(err)
		os.Exit(100)
	}
	var stop, errors, iterations int64
	var started, wg sync.WaitGroup
	const n = 4
	started.Add(n)
	for g := 0; g < n; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			runtime.LockOSThread()
			p := (*uint32)(unsafe.Pointer(&mem[0x100+4*g]))
			for i := uint32(0); atomic.LoadInt64(&stop) == 0; i++ {
				atomic.StoreUint32(p, i)
				if v := atomic.LoadUint32(p); v != i {
					fmt.Fprintf(os.Stderr, "v_go: goroutine %d read %d, want %d\n", g, v, i)
					atomic.AddInt64(&errors, 1)
				}
				if i == 0 {
					started.Done()
				}
				atomic.AddInt64(&iterations, 1)
				time.Sleep(time.Millisecond)
			}
		}(g)
	}
	started.Wait()
	if err := os.WriteFile(filepath.Join(dir, "ready.tmp"), []byte("go\n"), 0o644); err != nil {
		os.Exit(100)
	}
	if err := os.Rename(filepath.Join(dir, "ready.tmp"), filepath.Join(dir, "ready")); err != nil {
		os.Exit(100)
	}
	var keep [][]byte
	for {
		if _, err := os.Stat(filepath.Join(dir, "stop")); err == nil {
			break
		}
		keep = append(keep, make([]byte, 64<<10))
		if len(keep) > 64 {
			keep = keep[:0]
		}
		time.Sleep(time.Millisecond)
	}
	atomic.StoreInt64(&stop, 1)
	wg.Wait()
	// The device's descriptor stays open to the end (the test compares descriptors).
	runtime.KeepAlive(f)
	fmt.Printf("iterations %d errors %d\n", atomic.LoadInt64(&iterations), atomic.LoadInt64(&errors))
	if atomic.LoadInt64(&errors) != 0 {
		os.Exit(1)
	}
	os.Exit(4)
}
