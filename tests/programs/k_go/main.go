// k_go DEV N: a Go driver hot on its registers, for hot-site patching on the inject route.
// syscall.Mmap (a raw system call) maps DEV; four goroutines, each locked to its own OS
// thread, call hot() N times on their own register block (0x100 * (i+1)): a 4-byte store
// of i<<16|k to its register at +0x90 then a 4-byte load of it (plain moves with a 32-bit
// displacement: 6-byte sites, which need no punned jump); the main goroutine does the
// same on block 0 meanwhile. GOMAXPROCS is 4. Prints the number of wrong values
// read (0) and exits 0.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"unsafe"
)

// A register block: its register at +0x90.
type block struct {
	_ [0x24]uint32
	r uint32
}

//go:noinline
func store(p *block, v uint32) { p.r = v }

//go:noinline
func load(p *block) uint32 { return p.r }

func hot(mem []byte, t int, n int) int {
	p := (*block)(unsafe.Pointer(&mem[0x100*t]))
	bad := 0
	for k := 0; k < n; k++ {
		v := uint32(t<<16 | k)
		store(p, v)
		if load(p) != v {
			bad++
		}
	}
	return bad
}

func main() {
	runtime.GOMAXPROCS(4)
	f, err := os.OpenFile(os.Args[1], os.O_RDWR, 0)
	if err != nil {
		fmt.Println(err)
		os.Exit(100)
	}
	n, _ := strconv.Atoi(os.Args[2])
	mem, err := syscall.Mmap(int(f.Fd()), 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		fmt.Println(err)
		os.Exit(100)
	}
	var wg sync.WaitGroup
	bad := make([]int, 5)
	for i := 1; i <= 4; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			bad[i] = hot(mem, i, n)
		}(i)
	}
	bad[0] = hot(mem, 0, n)
	wg.Wait()
	sum := 0
	for _, b := range bad {
		sum += b
	}
	fmt.Printf("bad %d\n", sum)
}
