package pgproc

// credential is the user a server's commands run as when the process runs
// as root (initdb refuses root): the postgres user.
type credential struct{ uid, gid int }
