// Package pb holds the generated protobuf code for the chat wire format.
package pb

//go:generate protoc --go_out=. --go_opt=paths=source_relative chat.proto
