// Makes MongoDB's users and roles what the mongodb role says (its _mongodb_access), and
// nothing more: run by the role on the MongoDB node as
//
//   mongosh --quiet --nodb --file casatwin-mongodb-access.js  < plan.json
//
// The plan (passwords included) comes on the standard input: never on a command line, which
// every user of the node can read, nor in a file. Idempotent: it changes only what differs
// and prints {"changed": [...]} as its last line.
//
// - The administrator: logged in as; created through MongoDB's localhost exception when the
//   server has no user yet (a fresh node), which is why it connects to 127.0.0.1.
// - Per service a role with exactly the plan's privileges, and a user holding that role
//   alone; a password is set again only when logging in with the plan's fails.
// - Users and roles of the plan's prefix that the plan no longer has are dropped.
const fs = require('fs');

const plan = JSON.parse(fs.readFileSync(0, 'utf8'));
const url = `mongodb://127.0.0.1:${plan.port}/?directConnection=true`;
const changed = [];

function canLogIn(user, password) {
  const probe = new Mongo(url);
  try {
    probe.getDB('admin').auth(user, password);
    return true;
  } catch (e) {
    return false;
  } finally {
    probe.close();
  }
}

function privilegesKey(privileges) {
  return (privileges || [])
    .map((p) => `${p.resource.db}.${p.resource.collection}:${[...p.actions].sort().join(',')}`)
    .sort()
    .join(';');
}

function rolesKey(roles) {
  return (roles || []).map((r) => `${r.db}.${r.role}`).sort().join(';');
}

const conn = new Mongo(url);
const admin = conn.getDB('admin');

// The administrator.
try {
  admin.auth(plan.admin.user, plan.admin.password);
} catch (e) {
  try {
    admin.createUser({
      user: plan.admin.user,
      pwd: plan.admin.password,
      roles: [{ role: 'userAdminAnyDatabase', db: 'admin' }],
    });
  } catch (created) {
    throw new Error(
      `cannot log in as ${plan.admin.user} with the vault's password, and the server ` +
        `already has users (no localhost exception): ${created.message}. The administrator's ` +
        'password is changed by hand (db.changeUserPassword), then in the vault.'
    );
  }
  changed.push(`user ${plan.admin.user} (administrator) created`);
  admin.auth(plan.admin.user, plan.admin.password);
}

// The services' roles, then their users.
const roles = admin.runCommand({ rolesInfo: 1, showPrivileges: true }).roles;
for (const want of plan.roles) {
  const have = roles.find((r) => r.role === want.role);
  if (!have) {
    admin.createRole({ role: want.role, privileges: want.privileges, roles: [] });
    changed.push(`role ${want.role} created`);
  } else if (
    privilegesKey(have.privileges) !== privilegesKey(want.privileges) ||
    (have.roles || []).length > 0
  ) {
    admin.updateRole(want.role, { privileges: want.privileges, roles: [] });
    changed.push(`role ${want.role} privileges set`);
  }
}

const users = admin.runCommand({ usersInfo: 1 }).users;
for (const want of plan.users) {
  const have = users.find((u) => u.user === want.user);
  if (!have) {
    admin.createUser({ user: want.user, pwd: want.password, roles: want.roles });
    changed.push(`user ${want.user} created`);
    continue;
  }
  if (rolesKey(have.roles) !== rolesKey(want.roles)) {
    admin.updateUser(want.user, { roles: want.roles });
    changed.push(`user ${want.user} roles set`);
  }
  if (!canLogIn(want.user, want.password)) {
    admin.updateUser(want.user, { pwd: want.password });
    changed.push(`user ${want.user} password set`);
  }
}

// What the plan no longer has (a service taken off the read model).
const wantedUsers = new Set(plan.users.map((u) => u.user));
for (const u of users) {
  if (u.user.startsWith(plan.prefix) && !wantedUsers.has(u.user)) {
    admin.dropUser(u.user);
    changed.push(`user ${u.user} dropped`);
  }
}
const wantedRoles = new Set(plan.roles.map((r) => r.role));
for (const r of roles) {
  if (r.role.startsWith(plan.prefix) && !wantedRoles.has(r.role)) {
    admin.dropRole(r.role);
    changed.push(`role ${r.role} dropped`);
  }
}

conn.close();
print(JSON.stringify({ changed }));
