// A Go program without crypto/tls: the agent must say so rather than attach.
package main

import (
	"bufio"
	"fmt"
	"os"
)

func main() {
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n')
}
