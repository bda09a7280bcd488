package hostsfile_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/hostsfile"
)

// writeFile writes a hosts file for the examples and returns its path.
func writeFile(name, body string) (path string, cleanup func()) {
	dir, err := os.MkdirTemp("", "hostsfile")
	if err != nil {
		log.Fatal(err)
	}
	path = filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		log.Fatal(err)
	}
	return path, func() { os.RemoveAll(dir) }
}

func Example() {
	path, cleanup := writeFile("hosts.yaml", `hosts:
  "52:54:00:66:ea:9a":
    IPAddress: 198.18.0.10
    SubnetMask: 255.255.255.0
    Hostname: node-1
    AllowNetboot: true
    IPXEScriptURL: http://198.18.0.1:8080/auto.ipxe
`)
	defer cleanup()

	hosts, err := hostsfile.New(hostsfile.Config{Path: path})
	if err != nil {
		log.Fatal(err)
	}
	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
	d, n, err := hosts.Lookup(context.Background(), backend.DHCPRequest{MACAddress: mac})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(d.IPAddress, d.SubnetMask.Bits(), d.Hostname, n.AllowNetboot, n.IPXEScriptURL)

	other, _ := net.ParseMAC("52:54:00:00:00:01")
	_, _, err = hosts.Lookup(context.Background(), backend.DHCPRequest{MACAddress: other})
	fmt.Println(errors.Is(err, backend.ErrNotFound))
	// Output:
	// 198.18.0.10 24 node-1 true http://198.18.0.1:8080/auto.ipxe
	// true
}

// A malformed file is an error naming the file, the line and the host.
func ExampleError() {
	path, cleanup := writeFile("hosts.yaml", `hosts:
  "52:54:00:66:ea:9a":
    IPAddress: 198.18.0.10
    SubnetMask: 255.0.255.0
`)
	defer cleanup()

	_, err := hostsfile.New(hostsfile.Config{Path: path})
	var fe *hostsfile.Error
	if errors.As(err, &fe) {
		fmt.Println(filepath.Base(fe.Path), fe.Line, fe.MAC)
	}
	// Output:
	// hosts.yaml 4 52:54:00:66:ea:9a
}

// Reload puts a new version of the file in service; a malformed version
// keeps the previous one.
func ExampleBackend_Reload() {
	path, cleanup := writeFile("hosts.json", `{"hosts": {"52:54:00:66:ea:9a": {"IPAddress": "198.18.0.10"}}}`)
	defer cleanup()
	hosts, err := hostsfile.New(hostsfile.Config{Path: path})
	if err != nil {
		log.Fatal(err)
	}
	lookup := func() string {
		mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
		d, _, err := hosts.Lookup(context.Background(), backend.DHCPRequest{MACAddress: mac})
		if err != nil {
			return err.Error()
		}
		return d.IPAddress.String()
	}
	fmt.Println(lookup())

	os.WriteFile(path, []byte(`{"hosts": {"52:54:00:66:ea:9a": {"IPAddress": "198.18.0.20"}}}`), 0o644)
	fmt.Println(hosts.Reload(), lookup())

	os.WriteFile(path, []byte(`{"hosts": {"52:54:00:66:ea:9a": {"IPAddress": "nope"}}}`), 0o644)
	fmt.Println(hosts.Reload() != nil, lookup())
	// Output:
	// 198.18.0.10
	// <nil> 198.18.0.20
	// true 198.18.0.20
}
