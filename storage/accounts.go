package storage

import (
	"context"
	"database/sql"
	"time"
)

func nowMS() int64 { return time.Now().UnixMilli() }

// Account is a local user account.
type Account struct {
	Localpart    string
	PasswordHash string
	IsAdmin      bool
	IsGuest      bool
	Deactivated  bool
	DisplayName  string
	AvatarURL    string
}

// Device is a logged-in session of an account.
type Device struct {
	Localpart   string
	DeviceID    string
	DisplayName string
	LastSeenTS  int64
	LastSeenIP  string
	IsGuest     bool // the account is a guest account
}

// CreateAccount inserts a new account; ErrConflict if the localpart is taken.
func (db *DB) CreateAccount(ctx context.Context, a Account) error {
	return db.Write(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO accounts (localpart, password_hash, is_admin, is_guest, created_ts, displayname) VALUES ($1, $2, $3, $4, $5, $6)`,
			a.Localpart, a.PasswordHash, b2i(a.IsAdmin), b2i(a.IsGuest), nowMS(), nullStr(a.DisplayName))
		return err
	})
}

// GetAccount returns an account by localpart.
func (db *DB) GetAccount(ctx context.Context, localpart string) (*Account, error) {
	var a Account
	var admin, guest, deact int
	var dn, av sql.NullString
	err := db.R().QueryRowContext(ctx, `SELECT localpart, password_hash, is_admin, is_guest, deactivated, displayname, avatar_url FROM accounts WHERE localpart = $1`, localpart).
		Scan(&a.Localpart, &a.PasswordHash, &admin, &guest, &deact, &dn, &av)
	if err != nil {
		return nil, scanErr(err)
	}
	a.IsAdmin, a.IsGuest, a.Deactivated, a.DisplayName, a.AvatarURL = admin != 0, guest != 0, deact != 0, dn.String, av.String
	return &a, nil
}

// SetPassword replaces an account's password hash.
func (db *DB) SetPassword(ctx context.Context, localpart, hash string) error {
	return db.Write(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE accounts SET password_hash = $1 WHERE localpart = $2`, hash, localpart)
		return err
	})
}

// DeactivateAccount marks the account deactivated and removes its devices.
func (db *DB) DeactivateAccount(ctx context.Context, localpart string) error {
	defer db.tokens.invalidate(localpart)
	return db.Write(ctx, func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE accounts SET deactivated = 1, password_hash = '' WHERE localpart = $1`, localpart); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM devices WHERE localpart = $1`, localpart)
		return err
	})
}

// SetProfile sets the display name and/or avatar URL (nil leaves a field).
func (db *DB) SetProfile(ctx context.Context, localpart string, displayName, avatarURL *string) error {
	return db.Write(ctx, func(tx *Tx) error {
		if displayName != nil {
			if _, err := tx.ExecContext(ctx, `UPDATE accounts SET displayname = $1 WHERE localpart = $2`, nullStr(*displayName), localpart); err != nil {
				return err
			}
		}
		if avatarURL != nil {
			if _, err := tx.ExecContext(ctx, `UPDATE accounts SET avatar_url = $1 WHERE localpart = $2`, nullStr(*avatarURL), localpart); err != nil {
				return err
			}
		}
		return nil
	})
}

// CreateDevice creates or replaces a device with a new access token hash.
func (db *DB) CreateDevice(ctx context.Context, localpart, deviceID, displayName, tokenHash, ip string) error {
	defer db.tokens.invalidate(localpart) // an existing device's old token
	return db.Write(ctx, func(tx *Tx) error {
		now := nowMS()
		_, err := tx.ExecContext(ctx, `INSERT INTO devices (localpart, device_id, display_name, token_hash, created_ts, last_seen_ts, last_seen_ip)
			VALUES ($1, $2, $3, $4, $5, $5, $6)
			ON CONFLICT (localpart, device_id) DO UPDATE SET token_hash = excluded.token_hash, last_seen_ts = excluded.last_seen_ts,
			display_name = COALESCE(excluded.display_name, devices.display_name)`,
			localpart, deviceID, nullStr(displayName), tokenHash, now, ip)
		return err
	})
}

// DeviceByTokenHash returns the device owning an access token hash.
// Answers are cached (see tokenCache); DisplayName, LastSeenTS and
// LastSeenIP of a cached device may be old.
func (db *DB) DeviceByTokenHash(ctx context.Context, hash string) (*Device, error) {
	if d, ok := db.tokens.get(hash); ok {
		return d, nil
	}
	gen := db.tokens.gen.Load()
	var d Device
	var dn sql.NullString
	var guest int
	err := db.R().QueryRowContext(ctx, `SELECT d.localpart, d.device_id, d.display_name, d.last_seen_ts, d.last_seen_ip, a.is_guest
		FROM devices d JOIN accounts a ON a.localpart = d.localpart WHERE d.token_hash = $1`, hash).
		Scan(&d.Localpart, &d.DeviceID, &dn, &d.LastSeenTS, &d.LastSeenIP, &guest)
	if err != nil {
		return nil, scanErr(err)
	}
	d.DisplayName, d.IsGuest = dn.String, guest != 0
	db.tokens.putIfCurrent(hash, &d, gen)
	return &d, nil
}

// Devices lists an account's devices.
func (db *DB) Devices(ctx context.Context, localpart string) ([]Device, error) {
	rows, err := db.R().QueryContext(ctx, `SELECT localpart, device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE localpart = $1 ORDER BY device_id`, localpart)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		var d Device
		var dn sql.NullString
		if err := rows.Scan(&d.Localpart, &d.DeviceID, &dn, &d.LastSeenTS, &d.LastSeenIP); err != nil {
			return nil, err
		}
		d.DisplayName = dn.String
		out = append(out, d)
	}
	return out, rows.Err()
}

// GetDevice returns one device.
func (db *DB) GetDevice(ctx context.Context, localpart, deviceID string) (*Device, error) {
	var d Device
	var dn sql.NullString
	err := db.R().QueryRowContext(ctx, `SELECT localpart, device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE localpart = $1 AND device_id = $2`, localpart, deviceID).
		Scan(&d.Localpart, &d.DeviceID, &dn, &d.LastSeenTS, &d.LastSeenIP)
	if err != nil {
		return nil, scanErr(err)
	}
	d.DisplayName = dn.String
	return &d, nil
}

// SetDeviceName renames a device; ErrNotFound if it does not exist.
func (db *DB) SetDeviceName(ctx context.Context, localpart, deviceID, name string) error {
	return db.Write(ctx, func(tx *Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE devices SET display_name = $1 WHERE localpart = $2 AND device_id = $3`, name, localpart, deviceID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// DeleteDevices removes devices (all of the account's when ids is nil),
// except the one named by keep.
func (db *DB) DeleteDevices(ctx context.Context, localpart string, ids []string, keep string) error {
	defer db.tokens.invalidate(localpart)
	return db.Write(ctx, func(tx *Tx) error {
		if ids == nil {
			_, err := tx.ExecContext(ctx, `DELETE FROM devices WHERE localpart = $1 AND device_id <> $2`, localpart, keep)
			return err
		}
		for _, id := range ids {
			if id == keep {
				continue
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM devices WHERE localpart = $1 AND device_id = $2`, localpart, id); err != nil {
				return err
			}
		}
		return nil
	})
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}
