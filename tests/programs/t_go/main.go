// t_go DEV: a Go driver. syscall.Mmap (a raw system call, never libc) maps DEV; four
// goroutines, each locked to its own OS thread (they all hold their thread at once, at
// a barrier), write three values to their own register and read it back; a fifth,
// unlocked, goroutine writes one more register. GOMAXPROCS is 4. Prints what each read
// and exits with status 5.
package main

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

func main() {
	runtime.GOMAXPROCS(4)
	f, err := os.OpenFile(os.Args[1], os.O_RDWR, 0)
	if err != nil {
		fmt.Println(err)
		os.Exit(100)
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		fmt.Println(err)
		os.Exit(100)
	}
	reg := func(off int) *uint32 { return (*uint32)(unsafe.Pointer(&mem[off])) }
	const n = 4
	var locked, wg sync.WaitGroup
	locked.Add(n)
	start := make(chan struct{})
	got := make([]uint32, n+1)
	tids := make([]int, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tids[i] = syscall.Gettid()
			locked.Done()
			<-start
			p := reg(0x100 + 4*i)
			for k := 0; k < 3; k++ {
				atomic.StoreUint32(p, uint32(0xa000+0x10*i+k))
			}
			got[i] = atomic.LoadUint32(p)
		}(i)
	}
	locked.Wait()
	close(start)
	wg.Add(1)
	go func() {
		defer wg.Done()
		atomic.StoreUint32(reg(0x200), 0xfeed)
		got[n] = atomic.LoadUint32(reg(0x200))
	}()
	wg.Wait()
	threads := map[int]bool{}
	for _, t := range tids {
		threads[t] = true
	}
	fmt.Printf("got %x threads %d\n", got, len(threads))
	syscall.Munmap(mem)
	os.Exit(5)
}
