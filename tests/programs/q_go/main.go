// q_go DEV CHILD ARGS...: a Go driver that runs another driver. syscall.Mmap maps DEV;
// the program writes 0x1 at 0x10, runs CHILD ARGS... with os/exec (Go's own
// clone(CLONE_VM|CLONE_VFORK) and execve, signals blocked around them), twice, each time
// from a different goroutine, writes the child's exit status at 0x18 after each, prints
// the child's output and exits with status 5.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"sync/atomic"
	"syscall"
	"unsafe"
)

func main() {
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
	atomic.StoreUint32(reg(0x10), 1)
	for k := 0; k < 2; k++ {
		done := make(chan struct{})
		go func() {
			defer close(done)
			out, err := exec.Command(os.Args[2], os.Args[3:]...).Output()
			code := -1
			if e, ok := err.(*exec.ExitError); ok {
				code = e.ExitCode()
			} else if err == nil {
				code = 0
			}
			fmt.Printf("%schild %d\n", out, code)
			atomic.StoreUint32(reg(0x18), uint32(code))
		}()
		<-done
	}
	os.Exit(5)
}
