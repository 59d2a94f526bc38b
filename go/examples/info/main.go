// Command info prints the linked liblmx version, the device MLX computes on and MLX's memory
// counters, and sets and restores the cache limit.
package main

import (
	"fmt"
	"log"

	"liblmx/go/lmx"
)

func main() {
	fmt.Printf("liblmx %s (ABI %d)\n", lmx.Version(), lmx.ABI())
	d, err := lmx.DeviceInfo()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("device: %s\n", d)
	prev, err := lmx.SetCacheLimit(256 << 20)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := lmx.SetCacheLimit(prev); err != nil {
		log.Fatal(err)
	}
	active, _ := lmx.ActiveMemory()
	peak, _ := lmx.PeakMemory()
	fmt.Printf("cache limit was %d bytes; active %d, peak %d bytes\n", prev, active, peak)
}
