package main

// Version is kettle's version, recorded in provenance as the kettle tool.
var Version = "0.1.0"
