module liblmx/go

go 1.26
