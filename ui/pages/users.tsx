// Console users (admin): add, change role, reset password, delete. The last admin cannot be removed or
// demoted, and an admin cannot remove or demote themselves (ask another admin).
import { asOutpostError, ERRORS, OutpostError } from '../../appliance/errors.ts';
import { addUser, deleteUser, listUsers, MIN_PASSWORD, ROLES, setPassword, setRole, getUser } from '../../appliance/users.ts';
import type { PageStatus, RouteDef, UiContext } from '../context.ts';
import { field, type Ctx } from '../guard.ts';
import { Csrf, DangerButton, ErrorBox, fmtTime, Page, Table } from '../layout.tsx';

const DONE: Record<string, string> = {
  added: 'User added.',
  role: 'Role changed; their sessions were ended.',
  password: 'Password set; their sessions were ended.',
  deleted: 'User deleted.',
};

export function userRoutes(ui: UiContext): RouteDef[] {
  const page = (c: Ctx, extra: { error?: OutpostError; notice?: string } = {}) => {
    const session = c.get('session');
    const users = listUsers(ui.db);
    const sessions = new Map(
      (ui.db.prepare('SELECT user_id, count(*) AS n FROM sessions GROUP BY user_id').all() as { user_id: number; n: number }[]).map((r) => [r.user_id, r.n]),
    );
    return c.html(
      <Page title="Users" session={session} active="/users" notice={extra.notice}>
        {extra.error ? <ErrorBox code={extra.error.code} message={extra.error.message} /> : null}
        <Table head={['User', 'Role', 'Created', 'Last sign-in', 'Sessions', 'Change role', 'Set password', '']}>
          {users.map((u) => {
            const self = u.id === session.user.id;
            return (
              <tr>
                <td>
                  <strong>{u.name}</strong> {self ? <small>(you)</small> : null}
                </td>
                <td>{u.role}</td>
                <td>{fmtTime(u.created_at)}</td>
                <td>{fmtTime(u.last_login_at)}</td>
                <td class="num">{sessions.get(u.id) ?? 0}</td>
                <td>
                  {!self ? (
                    <form method="post" action={`/users/${u.id}/role`} class="row">
                      <Csrf session={session} />
                      <select name="role" aria-label={`role of ${u.name}`}>
                        {ROLES.map((r) => (
                          <option value={r} selected={r === u.role}>
                            {r}
                          </option>
                        ))}
                      </select>
                      <button type="submit" class="small">
                        Set
                      </button>
                    </form>
                  ) : null}
                </td>
                <td>
                  <form method="post" action={`/users/${u.id}/password`} class="row">
                    <Csrf session={session} />
                    <input name="password" type="password" autocomplete="new-password" minlength={MIN_PASSWORD} required aria-label={`new password for ${u.name}`} />
                    <button type="submit" class="small">
                      Set
                    </button>
                  </form>
                </td>
                <td>
                  {!self ? (
                    <DangerButton session={session} action={`/users/${u.id}/delete`} label="Delete" />
                  ) : null}
                </td>
              </tr>
            );
          })}
        </Table>
        <form method="post" action="/users" class="card inline">
          <Csrf session={session} />
          <h2>Add a user</h2>
          <label>
            Name
            <input name="name" required maxlength={64} autocomplete="off" />
          </label>
          <label>
            Role
            <select name="role">
              <option value="viewer">viewer (read only)</option>
              <option value="admin">admin</option>
            </select>
          </label>
          <label>
            Password (at least {MIN_PASSWORD} characters)
            <input name="password" type="password" minlength={MIN_PASSWORD} required autocomplete="new-password" />
          </label>
          <button type="submit">Add user</button>
        </form>
      </Page>,
      extra.error ? (ERRORS[extra.error.code].status as PageStatus) : 200,
    );
  };

  const act = (fn: (c: Ctx, id: number) => Promise<string> | string) => async (c: Ctx) => {
    try {
      const done = await fn(c, Number(c.req.param('id')));
      return c.redirect(`/users?done=${done}`, 303);
    } catch (e) {
      return page(c, { error: asOutpostError(e) });
    }
  };
  const notSelf = (c: Ctx, id: number, what: string) => {
    if (id === c.get('session').user.id) throw new OutpostError('E_CONFLICT', `you cannot ${what} yourself; ask another admin`);
  };

  return [
    { method: 'GET', path: '/users', access: 'admin', handler: (c) => page(c, { notice: DONE[c.req.query('done') ?? ''] }) },
    {
      method: 'POST',
      path: '/users',
      access: 'admin',
      handler: act(async (c) => {
        await addUser(ui.db, field(c, 'name').trim(), field(c, 'role'), field(c, 'password'), c.get('session').user.name);
        return 'added';
      }),
    },
    {
      method: 'POST',
      path: '/users/:id/role',
      access: 'admin',
      handler: act((c, id) => {
        notSelf(c, id, 'change the role of');
        setRole(ui.db, id, field(c, 'role'), c.get('session').user.name);
        return 'role';
      }),
    },
    {
      method: 'POST',
      path: '/users/:id/password',
      access: 'admin',
      handler: act(async (c, id) => {
        const u = getUser(ui.db, id);
        if (!u) throw new OutpostError('E_NOT_FOUND', `no user with id ${id}`);
        await setPassword(ui.db, u.name, field(c, 'password'), c.get('session').user.name);
        return 'password';
      }),
    },
    {
      method: 'POST',
      path: '/users/:id/delete',
      access: 'admin',
      handler: act((c, id) => {
        notSelf(c, id, 'delete');
        deleteUser(ui.db, id, c.get('session').user.name);
        return 'deleted';
      }),
    },
  ];
}
