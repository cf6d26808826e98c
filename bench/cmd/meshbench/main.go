package main

import (
	_ "github.com/gossip-mesh/mesh"
	_ "github.com/hashicorp/memberlist"
	_ "golang.org/x/crypto/nacl/secretbox"
)

func main() {}
