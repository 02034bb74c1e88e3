package pgproc

// KillGuardForTest kills s's guard, as a signal to its whole session would.
func KillGuardForTest(s *Server) error {
	if err := s.guard.Process.Kill(); err != nil {
		return err
	}
	_, _ = s.guard.Process.Wait()
	return nil
}

// CloseDirForTest stops the server whose directory is dir, at once, and
// removes its files, as Close does for its own.
func CloseDirForTest(dir string) {
	if s, err := newServer(); err == nil {
		s.dir = dir
		s.Close()
	}
}

// ReapOrphansForTest reaps as Start does before it makes its server.
func ReapOrphansForTest() error {
	s, err := newServer()
	if err != nil {
		return err
	}
	reapOrphans(s.bin, s.cred)
	return nil
}
