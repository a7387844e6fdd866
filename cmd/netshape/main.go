// Command netshape is a per-process network firewall and traffic shaper.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

func main() {
	app := &cli.App{
		Name:  "netshape",
		Usage: "per-process network firewall and traffic shaper",
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "netshape:", err)
		os.Exit(1)
	}
}
